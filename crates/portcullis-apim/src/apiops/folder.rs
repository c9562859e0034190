//! Reading an APIOps extractor folder into memory: which files exist, their JSON `properties`,
//! their policy documents parsed with positions.
//!
//! Why lenient about the layout: the extractor's layout changed over its releases (a product's APIs
//! as `products/<p>/apis.json` in older ones, `products/<p>/apis/<api>/productApiInformation.json`
//! in newer ones; a specification as `specification.yaml` or `.json`, or `.graphql`/`.wsdl`/`.wadl`
//! for other API types), and folders are named after display names with spaces (`named values`,
//! `policy fragments`, `version sets`). Every form seen is accepted; what is read is what the files
//! hold (the ARM REST shape: a `properties` object), nothing is assumed.
//!
//! Every file read gets an index (its [`Pos::file`](crate::xml::Pos)), so a diagnostic anywhere in
//! a composed policy names the file it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::xml::{self, Element};

/// A policy document read from the folder.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Its index in [`Folder::files`].
    pub file: u32,
    /// Its top-level elements.
    pub roots: Vec<Element>,
}

/// The OpenAPI (or other) description of an API's operations.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Its index in [`Folder::files`].
    pub file: u32,
    /// Absolute path (written into the `openapi:` key of mocked operations).
    pub path: PathBuf,
    /// The file's text.
    pub text: String,
    /// `yaml`, `json`, `graphql`, `wsdl`, `wadl`, ...
    pub extension: String,
}

/// One API folder (`apis/<api>` or a revision `apis/<api>;rev=N`).
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// The API name (the folder name without `;rev=N`).
    pub name: String,
    /// The revision from the folder name, if any.
    pub folder_revision: Option<String>,
    /// `apiInformation.json`'s index in [`Folder::files`].
    pub info_file: u32,
    /// Its `properties`.
    pub props: Value,
    /// `apis/<api>/policy.xml`.
    pub policy: Option<Policy>,
    /// `apis/<api>/operations/<operation>/policy.xml`, by operation name.
    pub operation_policies: BTreeMap<String, Policy>,
    /// `specification.*`.
    pub spec: Option<Spec>,
}

/// One product.
#[derive(Debug, Clone)]
pub(crate) struct Product {
    /// The folder name (the product id subscriptions name in their scope).
    pub name: String,
    /// `productInformation.json`'s `properties` (empty when absent).
    pub props: Value,
    /// `products/<p>/policy.xml`.
    pub policy: Option<Policy>,
    /// The APIs it holds, from `apis/<api>/` folders and `apis.json`.
    pub apis: Vec<String>,
}

/// A file with its `properties`, named after its folder.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    /// The folder name.
    pub name: String,
    /// The file's index in [`Folder::files`].
    pub file: u32,
    /// Its `properties`.
    pub props: Value,
}

/// Everything read from the folder.
#[derive(Debug, Default)]
pub(crate) struct Folder {
    /// Every file read, as displayed in diagnostics (the folder as given, joined with the path).
    pub files: Vec<String>,
    /// The same files relative to the folder (`apis/orders/policy.xml`), for the short forms of
    /// the report.
    pub rels: Vec<String>,
    /// `policy.xml` at the top: the global (all APIs) scope.
    pub global: Option<Policy>,
    /// Every API folder, sorted by folder name.
    pub apis: Vec<Api>,
    /// Every product, sorted by name.
    pub products: Vec<Product>,
    /// `named values/<name>/namedValueInformation.json`.
    pub named_values: Vec<Resource>,
    /// `backends/<name>/backendInformation.json`.
    pub backends: Vec<Resource>,
    /// `version sets/<name>/versionSetInformation.json`, by folder name.
    pub version_sets: BTreeMap<String, Resource>,
    /// `subscriptions/<name>/subscriptionInformation.json`.
    pub subscriptions: Vec<Resource>,
    /// `policy fragments/<name>/policy.xml`, by folder name.
    pub fragments: BTreeMap<String, Policy>,
    /// Files that are not well-formed (`file:line:col: invalid ...`).
    pub invalid: Vec<String>,
}

/// Why the folder could not be read at all.
#[derive(Debug)]
pub(crate) struct ReadError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl Folder {
    fn add_file(&mut self, dir: &Path, rel: &Path) -> u32 {
        self.files.push(dir.join(rel).display().to_string());
        self.rels.push(rel.display().to_string());
        u32::try_from(self.files.len() - 1).unwrap_or(u32::MAX)
    }

    /// File `index` relative to the folder.
    pub fn rel(&self, index: u32) -> &str {
        self.rels.get(index as usize).map_or("?", String::as_str)
    }

    /// The display name of file `index`.
    pub fn file(&self, index: u32) -> &str {
        self.files.get(index as usize).map_or("?", String::as_str)
    }

    fn read_text(&mut self, dir: &Path, rel: &Path) -> Result<Option<(u32, String)>, ReadError> {
        let path = dir.join(rel);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|error| ReadError {
            path: path.clone(),
            error,
        })?;
        let text = text
            .strip_prefix('\u{feff}')
            .map(str::to_owned)
            .unwrap_or(text);
        Ok(Some((self.add_file(dir, rel), text)))
    }

    fn read_policy(&mut self, dir: &Path, rel: &Path) -> Result<Option<Policy>, ReadError> {
        let Some((file, text)) = self.read_text(dir, rel)? else {
            return Ok(None);
        };
        match xml::parse_in(&text, file) {
            Ok(roots) => Ok(Some(Policy { file, roots })),
            Err(e) => {
                let name = self.file(file).to_owned();
                self.invalid.push(format!("{name}:{e}"));
                Ok(None)
            }
        }
    }

    /// A JSON file's `properties` (the whole document when it has none).
    fn read_props(&mut self, dir: &Path, rel: &Path) -> Result<Option<(u32, Value)>, ReadError> {
        let Some((file, text)) = self.read_text(dir, rel)? else {
            return Ok(None);
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(mut v) => {
                let props = match v.get_mut("properties") {
                    Some(p) => p.take(),
                    None => v,
                };
                Ok(Some((file, props)))
            }
            Err(e) => {
                let name = self.file(file).to_owned();
                self.invalid.push(format!(
                    "{name}:{}:{}: invalid JSON: {e}",
                    e.line(),
                    e.column()
                ));
                Ok(None)
            }
        }
    }

    /// Every `<collection>/<name>/<file>` as resources.
    fn resources(
        &mut self,
        dir: &Path,
        collection: &str,
        file: &str,
    ) -> Result<Vec<Resource>, ReadError> {
        let mut out = Vec::new();
        for name in subdirs(&dir.join(collection))? {
            let rel = Path::new(collection).join(&name).join(file);
            if let Some((index, props)) = self.read_props(dir, &rel)? {
                out.push(Resource {
                    name,
                    file: index,
                    props,
                });
            }
        }
        Ok(out)
    }
}

/// The names of the directories in `dir`, sorted (none when `dir` does not exist).
fn subdirs(dir: &Path) -> Result<Vec<String>, ReadError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|error| ReadError {
        path: dir.to_path_buf(),
        error,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| ReadError {
            path: dir.to_path_buf(),
            error,
        })?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Read the whole folder.
pub(crate) fn read(dir: &Path) -> Result<Folder, ReadError> {
    if !dir.is_dir() {
        return Err(ReadError {
            path: dir.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let mut f = Folder::default();
    f.global = f.read_policy(dir, Path::new("policy.xml"))?;
    for name in subdirs(&dir.join("policy fragments"))? {
        let rel = Path::new("policy fragments").join(&name).join("policy.xml");
        if let Some(p) = f.read_policy(dir, &rel)? {
            f.fragments.insert(name, p);
        }
    }
    f.named_values = f.resources(dir, "named values", "namedValueInformation.json")?;
    f.backends = f.resources(dir, "backends", "backendInformation.json")?;
    f.version_sets = f
        .resources(dir, "version sets", "versionSetInformation.json")?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    f.subscriptions = f.resources(dir, "subscriptions", "subscriptionInformation.json")?;
    for folder in subdirs(&dir.join("apis"))? {
        let base = Path::new("apis").join(&folder);
        let Some((info_file, props)) = f.read_props(dir, &base.join("apiInformation.json"))? else {
            continue;
        };
        let (name, folder_revision) = match folder.split_once(";rev=") {
            Some((n, r)) => (n.to_owned(), Some(r.to_owned())),
            None => (folder.clone(), None),
        };
        let policy = f.read_policy(dir, &base.join("policy.xml"))?;
        let mut operation_policies = BTreeMap::new();
        for op in subdirs(&dir.join(&base).join("operations"))? {
            let rel = base.join("operations").join(&op).join("policy.xml");
            if let Some(p) = f.read_policy(dir, &rel)? {
                operation_policies.insert(op, p);
            }
        }
        let mut spec = None;
        for ext in ["yaml", "yml", "json", "graphql", "gql", "wsdl", "wadl"] {
            let rel = base.join(format!("specification.{ext}"));
            if let Some((file, text)) = f.read_text(dir, &rel)? {
                let joined = dir.join(&rel);
                let path = std::path::absolute(&joined).unwrap_or(joined);
                spec = Some(Spec {
                    file,
                    path,
                    text,
                    extension: ext.to_owned(),
                });
                break;
            }
        }
        f.apis.push(Api {
            name,
            folder_revision,
            info_file,
            props,
            policy,
            operation_policies,
            spec,
        });
    }
    for name in subdirs(&dir.join("products"))? {
        let base = Path::new("products").join(&name);
        let props = f
            .read_props(dir, &base.join("productInformation.json"))?
            .map_or(Value::Null, |(_, p)| p);
        let policy = f.read_policy(dir, &base.join("policy.xml"))?;
        let mut apis = subdirs(&dir.join(&base).join("apis"))?;
        if let Some((_, list)) = f.read_props(dir, &base.join("apis.json"))? {
            for item in list.as_array().into_iter().flatten() {
                let api = item
                    .get("name")
                    .and_then(Value::as_str)
                    .or_else(|| item.as_str());
                if let Some(api) = api {
                    if !apis.iter().any(|a| a == api) {
                        apis.push(api.to_owned());
                    }
                }
            }
        }
        f.products.push(Product {
            name,
            props,
            policy,
            apis,
        });
    }
    Ok(f)
}

/// A string property.
pub(crate) fn str_prop<'a>(props: &'a Value, key: &str) -> Option<&'a str> {
    props.get(key).and_then(Value::as_str)
}

/// A boolean property (`true`/`false`, or the strings the REST API sometimes writes).
pub(crate) fn bool_prop(props: &Value, key: &str) -> Option<bool> {
    match props.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The last segment of an ARM id or relative reference (`/apiVersionSets/x` -> `x`).
pub(crate) fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}
