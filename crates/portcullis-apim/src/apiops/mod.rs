//! `import-apim --apiops DIR`: a whole APIM service, as the APIOps extractor writes it to a folder,
//! into one runnable gateway.yaml.
//!
//! Why: people replacing APIM in development have an instance, not one policy document; APIOps is
//! the common way it is kept in Git. The import is pure apart from reading the folder
//! ([`import`]: folder in, YAML text and a [`Report`] out), so `portcullis run --apiops` can run it
//! without an intermediate file.
//!
//! How (one module per job):
//! - [`folder`] reads the layout: the global `policy.xml`, `apis/<api>[;rev=N]/` (information,
//!   specification, API and operation policies), `products/`, `named values/`, `backends/`,
//!   `version sets/`, `subscriptions/`, `policy fragments/`;
//! - [`openapi`] lists each API's operations from its specification;
//! - [`compose`] builds each operation's effective policy from the scopes global -> product -> API
//!   -> operation, honouring `<base />` and its absence, with fragments inlined;
//! - the single-document converter ([`crate::convert`]) converts each composed policy, so a policy
//!   statement converts the same way whether it comes from one document or a folder;
//! - [`routes`] turns URL templates into route paths and orders the routes;
//! - [`report`] says per API and per operation what was imported and what was not.
//!
//! The choice for an API in several products: APIM runs a product's policy only for calls made
//! with a key of a subscription to that product. So each operation has one policy without any
//! product scope (keyless calls, API- and all-scoped keys) and, for each product with a policy of
//! its own, one policy with it; the route's `subscription.products` says which policy runs for a
//! key of which product.

mod compose;
mod folder;
mod openapi;
mod report;
mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use portcullis_config::{map_upstream, UpstreamMap};

use crate::convert::Converter;
use crate::diag::{Diagnostic, Kind};
use crate::gateway::{self, DEFAULT_UPSTREAM};
use crate::inbound::{Place, Step};
use crate::xml::{Element, Pos};
use crate::yaml::{write_document, Entry, Item, Node};
use crate::Summary;

use compose::{compose, Composed, Level};
use folder::{bool_prop, last_segment, str_prop, Api, Folder, Policy};
pub use report::{ApiReport, Coverage, Finding, OperationReport, Report};

/// APIM's default subscription key header.
pub const DEFAULT_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
/// APIM's default subscription key query parameter.
pub const DEFAULT_KEY_QUERY: &str = "subscription-key";

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--map-upstream FROM=TO`: applied to every upstream URL written (API `serviceUrl`s,
    /// `backends`, `set-backend-service` base URLs).
    pub map_upstream: Vec<UpstreamMap>,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The gateway.yaml text.
    pub yaml: String,
    /// What was imported and what was not.
    pub report: Report,
    /// True when nothing was reported unsupported (notes do not count): exit code 0, else 3.
    pub complete: bool,
    /// The non-secret named values whose value the folder holds (name as written in `{{name}}`,
    /// value): `run --apiops` resolves `{{name}}` from them when the environment does not set it.
    pub named_values: Vec<(String, String)>,
}

/// Why nothing was imported.
#[derive(Debug)]
pub enum Error {
    /// The folder or a file in it could not be read (exit 1).
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Files that are not well-formed XML, JSON or YAML, each `file:line:col: invalid ...` (exit 2).
    Invalid(Vec<String>),
}

impl Import {
    /// The folder's value of named value `name` (`{{name}}`), if it holds one (non-secret only):
    /// what `run --apiops` falls back to when the environment does not set the variable.
    pub fn named_value(&self, name: &str) -> Option<&str> {
        self.named_values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, error } => write!(f, "{}: cannot read: {error}", path.display()),
            Error::Invalid(lines) => f.write_str(&lines.join("\n")),
        }
    }
}

impl std::error::Error for Error {}

/// Import the extractor folder `dir`.
pub fn import(dir: &Path, opts: &Options) -> Result<Import, Error> {
    let folder = folder::read(dir).map_err(|e| Error::Io {
        path: e.path,
        error: e.error,
    })?;
    if !folder.invalid.is_empty() {
        return Err(Error::Invalid(folder.invalid));
    }
    let mut b = Builder {
        folder: &folder,
        opts,
        findings: BTreeSet::new(),
        policies: Vec::new(),
        routes: Vec::new(),
        seen: BTreeMap::new(),
        names: BTreeSet::new(),
        report: Report::default(),
        backend_refs: BTreeMap::new(),
        invalid: Vec::new(),
    };
    b.apis();
    if !b.invalid.is_empty() {
        return Err(Error::Invalid(b.invalid));
    }
    let named_values = b.named_values();
    let subscriptions = b.subscriptions();
    let backends = b.backends();
    b.routes.sort_by(|x, y| x.sort.cmp(&y.sort));
    let mut document = vec![gateway::server_entry()];
    if !subscriptions.is_empty() {
        document.push(Entry::new("subscriptions", Node::Map(subscriptions)));
    }
    if !backends.is_empty() {
        document.push(Entry::new("backends", Node::Map(backends)));
    }
    document.push(Entry::new(
        "policies",
        Node::Map(std::mem::take(&mut b.policies)),
    ));
    document.push(Entry::new(
        "routes",
        Node::Seq(b.routes.drain(..).map(|r| r.item).collect()),
    ));
    let body = write_document(&document);
    let mut yaml = format!(
        "# Imported from the APIOps folder {} by `portcullis import-apim --apiops`; check it with `portcullis check -c <this file>`.\n",
        dir.display()
    );
    if body.contains("{{") {
        yaml.push_str("# Named values ({{name}}) are resolved from the environment when the config is loaded (see docs/import-apim.md).\n");
    }
    yaml.push_str(&body);
    let mut report = b.report;
    report.findings = b.findings.into_iter().collect();
    let complete = report.findings.iter().all(|f| f.kind == Kind::Note);
    Ok(Import {
        yaml,
        report,
        complete,
        named_values,
    })
}

/// A route, with its place in the order.
struct RouteOut {
    sort: (routes::Shape, u8, u8, String),
    item: Item,
}

/// The state of one import.
struct Builder<'f> {
    folder: &'f Folder,
    opts: &'f Options,
    findings: BTreeSet<Finding>,
    policies: Vec<Entry>,
    routes: Vec<RouteOut>,
    /// Routes by what they match (shape, method, version): a second operation matching the same
    /// requests can never be reached.
    seen: BTreeMap<(routes::Shape, String, String), String>,
    /// Route names given.
    names: BTreeSet<String>,
    report: Report,
    /// `set-backend-service backend-id`s, with where first named.
    backend_refs: BTreeMap<String, Pos>,
    invalid: Vec<String>,
}

/// How an API is versioned on the wire.
enum Version {
    None,
    Segment(String),
    Header(String, String),
    Query(String, String),
}

impl<'f> Builder<'f> {
    fn find(&mut self, file: u32, line: usize, kind: Kind, subject: &str, reason: String) {
        self.findings.insert(Finding {
            file: self.folder.file(file).to_owned(),
            line,
            col: 1,
            kind,
            subject: subject.to_owned(),
            reason,
        });
    }

    fn diag(&mut self, d: &Diagnostic) {
        self.findings.insert(Finding {
            file: self.folder.file(d.pos.file).to_owned(),
            line: d.pos.line,
            col: d.pos.col,
            kind: d.kind,
            subject: d.subject.clone(),
            reason: d.reason.clone(),
        });
    }

    fn map(&self, url: &str) -> String {
        map_upstream(&self.opts.map_upstream, url).unwrap_or_else(|| url.to_owned())
    }

    fn apis(&mut self) {
        let mut by_name: BTreeMap<&str, Vec<&Api>> = BTreeMap::new();
        for api in &self.folder.apis {
            by_name.entry(api.name.as_str()).or_default().push(api);
        }
        for revisions in by_name.values() {
            let current = revisions
                .iter()
                .find(|a| bool_prop(&a.props, "isCurrent") == Some(true))
                .or_else(|| revisions.iter().find(|a| a.folder_revision.is_none()))
                .or_else(|| revisions.first())
                .copied();
            for api in revisions {
                if current.is_some_and(|c| std::ptr::eq(c, *api)) {
                    self.api(api);
                } else {
                    let rev = str_prop(&api.props, "apiRevision")
                        .map(str::to_owned)
                        .or_else(|| api.folder_revision.clone())
                        .unwrap_or_default();
                    let why = format!("revision {rev} is not the current revision (isCurrent is not true): only the current one is served");
                    self.find(api.info_file, 1, Kind::Note, "revision", why.clone());
                    self.report.apis.push(ApiReport {
                        name: api.name.clone(),
                        file: self.folder.rel(api.info_file).to_owned(),
                        summary: format!("not served: {why}"),
                        operations: Vec::new(),
                    });
                }
            }
        }
    }

    fn not_imported(&mut self, api: &Api, why: String) {
        self.find(api.info_file, 1, Kind::Unsupported, "api", why.clone());
        self.report.apis.push(ApiReport {
            name: api.name.clone(),
            file: self.folder.rel(api.info_file).to_owned(),
            summary: format!("not imported: {why}"),
            operations: Vec::new(),
        });
    }

    fn version(&mut self, api: &Api) -> Version {
        let Some(version) = str_prop(&api.props, "apiVersion").filter(|v| !v.is_empty()) else {
            return Version::None;
        };
        let set = str_prop(&api.props, "apiVersionSetId")
            .map(last_segment)
            .and_then(|id| self.folder.version_sets.get(id));
        let Some(set) = set else {
            self.find(
                api.info_file,
                1,
                Kind::Unsupported,
                "apiVersion",
                format!("version \"{version}\" names no version set in version sets/: the API is served without its version"),
            );
            return Version::None;
        };
        let scheme = str_prop(&set.props, "versioningScheme").unwrap_or("Segment");
        let name = |key: &str| str_prop(&set.props, key).map(str::to_owned);
        match scheme.to_ascii_lowercase().as_str() {
            "header" => match name("versionHeaderName") {
                Some(h) => Version::Header(h, version.to_owned()),
                None => {
                    self.find(set.file, 1, Kind::Unsupported, "versionHeaderName", "a Header version set without versionHeaderName: served without its version".to_owned());
                    Version::None
                }
            },
            "query" => {
                match name("versionQueryName") {
                    Some(q) => Version::Query(q, version.to_owned()),
                    None => {
                        self.find(set.file, 1, Kind::Unsupported, "versionQueryName", "a Query version set without versionQueryName: served without its version".to_owned());
                        Version::None
                    }
                }
            }
            _ => Version::Segment(version.to_owned()),
        }
    }

    /// The route upstream (an origin) and, when `serviceUrl` has a path, the base URL.
    fn upstream(&mut self, api: &Api) -> (String, Option<String>) {
        let Some(service) = str_prop(&api.props, "serviceUrl").filter(|s| !s.is_empty()) else {
            self.find(api.info_file, 1, Kind::Note, "serviceUrl", format!("the API has no serviceUrl: its routes go to {DEFAULT_UPSTREAM} unless a policy sets the backend"));
            return (DEFAULT_UPSTREAM.to_owned(), None);
        };
        let mapped = self.map(service);
        let parsed = url::Url::parse(&mapped)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        let Some(url) = parsed else {
            self.find(
                api.info_file,
                1,
                Kind::Unsupported,
                "serviceUrl",
                format!("`{mapped}` is not an http(s) URL: its routes go to {DEFAULT_UPSTREAM}"),
            );
            return (DEFAULT_UPSTREAM.to_owned(), None);
        };
        if url.query().is_some() {
            self.find(
                api.info_file,
                1,
                Kind::Unsupported,
                "serviceUrl",
                format!("the query of `{mapped}` is not forwarded"),
            );
        }
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let origin = format!(
            "{}://{}{port}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        );
        let path = url.path().trim_end_matches('/');
        let base = (!path.is_empty()).then(|| format!("{origin}{path}"));
        (origin, base)
    }

    fn api(&mut self, api: &'f Api) {
        let kind = str_prop(&api.props, "type")
            .or_else(|| str_prop(&api.props, "apiType"))
            .unwrap_or("http")
            .to_ascii_lowercase();
        let spec_ext = api.spec.as_ref().map(|s| s.extension.as_str());
        let other = match (kind.as_str(), spec_ext) {
            (_, Some("graphql" | "gql")) | ("graphql", _) => Some("GraphQL"),
            (_, Some("wsdl")) | ("soap", _) => Some("SOAP"),
            (_, Some("wadl")) => Some("WADL"),
            ("websocket", _) => Some("WebSocket"),
            ("grpc", _) => Some("gRPC"),
            ("odata", _) => Some("OData"),
            _ => None,
        };
        if let Some(other) = other {
            return self.not_imported(api, format!("{other} APIs are not imported: the gateway routes REST operations described by OpenAPI"));
        }
        let Some(spec) = &api.spec else {
            return self.not_imported(
                api,
                "no specification.yaml or specification.json: the operations are not known"
                    .to_owned(),
            );
        };
        let doc = match openapi::parse(spec) {
            Ok(d) => d,
            Err(e) => {
                self.invalid
                    .push(format!("{}:{e}", self.folder.file(spec.file)));
                return;
            }
        };
        let operations = openapi::operations(spec, &doc);
        let path = str_prop(&api.props, "path")
            .unwrap_or("")
            .trim_matches('/')
            .to_owned();
        let version = self.version(api);
        let prefix = match &version {
            Version::Segment(v) => format!("{path}/{v}"),
            _ => path.clone(),
        };
        let (upstream, base) = self.upstream(api);
        let required = bool_prop(&api.props, "subscriptionRequired").unwrap_or(true);
        let names = api.props.get("subscriptionKeyParameterNames");
        let header = names.and_then(|n| str_prop(n, "header")).map(str::to_owned);
        let query = names.and_then(|n| str_prop(n, "query")).map(str::to_owned);
        let products: Vec<&'f folder::Product> = self
            .folder
            .products
            .iter()
            .filter(|p| p.apis.contains(&api.name))
            .collect();
        // APIM's open products: a call without a key runs in the context of the (at most one)
        // product holding the API that does not require a subscription.
        let open: Vec<&str> = products
            .iter()
            .filter(|p| bool_prop(&p.props, "subscriptionRequired") == Some(false))
            .map(|p| p.name.as_str())
            .collect();
        let open_product = match open.as_slice() {
            [] => None,
            [one] => Some(*one),
            several => {
                self.find(api.info_file, 1, Kind::Unsupported, "subscriptionRequired", format!("the API is in several open products ({}), which APIM does not allow: calls without a key run none of their policies", several.join(", ")));
                None
            }
        };
        let mut summary = format!("path /{path}");
        match &version {
            Version::None => {}
            Version::Segment(v) => summary.push_str(&format!(", version {v} in the path")),
            Version::Header(h, v) => summary.push_str(&format!(", version {v} in header {h}")),
            Version::Query(q, v) => {
                summary.push_str(&format!(", version {v} in query parameter {q}"))
            }
        }
        summary.push_str(&format!(
            ", upstream {}",
            base.as_deref().unwrap_or(&upstream)
        ));
        if !products.is_empty() {
            let names: Vec<&str> = products.iter().map(|p| p.name.as_str()).collect();
            summary.push_str(&format!(", products {}", names.join(", ")));
        }
        summary.push_str(if required {
            ", subscription required"
        } else {
            ", no subscription required"
        });
        if let Some(open) = open_product {
            summary.push_str(&format!(
                ", calls without a key in open product {open}'s context"
            ));
        }
        let mut ops_report = Vec::new();
        let before = self.report.coverage.imported;
        for op in &operations {
            self.report.coverage.operations += 1;
            let outcome = self.operation(
                api,
                spec,
                op,
                &OpContext {
                    prefix: &prefix,
                    version: &version,
                    upstream: &upstream,
                    base: base.as_deref(),
                    required,
                    header: header.as_deref(),
                    query: query.as_deref(),
                    products: &products,
                    open_product,
                },
            );
            ops_report.push(outcome);
        }
        let imported = self.report.coverage.imported - before;
        summary.push_str(&format!(
            "; {imported}/{} operations imported",
            operations.len()
        ));
        self.report.apis.push(ApiReport {
            name: api.name.clone(),
            file: self.folder.rel(api.info_file).to_owned(),
            summary,
            operations: ops_report,
        });
    }

    /// An operation left out: the finding at its line in the specification, and its report row.
    fn drop_operation(
        &mut self,
        spec: &folder::Spec,
        op: &openapi::Operation,
        why: &str,
    ) -> OperationReport {
        self.find(
            spec.file,
            op.line,
            Kind::Unsupported,
            "operation",
            format!(
                "{} {}: {why}; the operation is dropped",
                op.method, op.template
            ),
        );
        OperationReport {
            method: op.method.clone(),
            template: op.template.clone(),
            route: None,
            outcome: format!(
                "dropped: {why} ({}:{})",
                self.folder.rel(spec.file),
                op.line
            ),
        }
    }

    fn operation(
        &mut self,
        api: &'f Api,
        spec: &folder::Spec,
        op: &openapi::Operation,
        cx: &OpContext<'_, 'f>,
    ) -> OperationReport {
        let template = match routes::convert(cx.prefix, &op.template) {
            Ok(t) => t,
            Err(why) => return self.drop_operation(spec, op, &why),
        };
        for p in &template.problems {
            self.find(
                spec.file,
                op.line,
                Kind::Unsupported,
                "URL template",
                format!("{} {}: {p}", op.method, op.template),
            );
        }
        let name = match &op.id {
            Some(id) => format!("{}.{id}", api.name),
            None => format!(
                "{}.{}{}",
                api.name,
                op.method.to_ascii_lowercase(),
                template
                    .backend
                    .replace(['/', '{', '}', '*'], "-")
                    .trim_end_matches('-')
            ),
        };
        // unique, also when operationIds repeat or names derived from paths meet
        let name = {
            let mut unique = name.clone();
            let mut n = 2;
            while !self.names.insert(unique.clone()) {
                unique = format!("{name}-{n}");
                n += 1;
            }
            unique
        };
        let version_key = match cx.version {
            Version::Header(h, v) => format!("header {}={v}", h.to_ascii_lowercase()),
            Version::Query(q, v) => format!("query {q}={v}"),
            _ => String::new(),
        };
        let shape = routes::shape(&template.path);
        let key = (shape.clone(), op.method.clone(), version_key.clone());
        if let Some(earlier) = self.seen.get(&key) {
            let why = format!(
                "route {earlier} already matches every {} {} request",
                op.method, template.path
            );
            return self.drop_operation(spec, op, &why);
        }
        self.seen.insert(key.clone(), name.clone());
        let op_policy = op.id.as_ref().and_then(|id| api.operation_policies.get(id));
        let global = self.folder.global.as_ref();
        let levels = |product: Option<&'f Policy>| -> [Level<'f>; 4] {
            [
                Level {
                    scope: "global",
                    policy: global,
                },
                Level {
                    scope: "product",
                    policy: product,
                },
                Level {
                    scope: "API",
                    policy: api.policy.as_ref(),
                },
                Level {
                    scope: "operation",
                    policy: op_policy,
                },
            ]
        };
        let mut synthetic = Vec::new();
        if template.path.replace("{*", "{") != template.backend {
            synthetic.push(
                Entry::new(
                    "rewrite-uri",
                    Node::Map(vec![Entry::new(
                        "template",
                        Node::str(template.backend.as_str()),
                    )]),
                )
                .comment("the operation's path below the API's serviceUrl, as APIM forwards it"),
            );
        }
        if let Some(base) = cx.base {
            synthetic.push(
                Entry::new(
                    "set-backend-service",
                    Node::Map(vec![Entry::new("base-url", Node::str(base))]),
                )
                .comment("the API's serviceUrl (its path is the base path)"),
            );
        }
        let mut base_doc = compose(&levels(None), &self.folder.fragments);
        let timeout = compose::take_forward_timeout(&mut base_doc.document);
        let mock = compose::contains(&base_doc.document, "mock-response");
        let base_document = base_doc.document.clone();
        let (policy, summary, mut refused) = self.convert(&name, &op.method, base_doc, &synthetic);
        let mut outcome = format!("route {name}, policy {policy}: {}", self.summary(&summary));
        let mut product_policies = Vec::new();
        let mut mocked = mock;
        for product in cx.products {
            let Some(pp) = product.policy.as_ref() else {
                product_policies.push((product.name.clone(), policy.clone()));
                continue;
            };
            let mut composed = compose(&levels(Some(pp)), &self.folder.fragments);
            let product_timeout = compose::take_forward_timeout(&mut composed.document);
            if product_timeout != timeout {
                self.find(pp.file, 1, Kind::Unsupported, "forward-request", format!("the forward-request timeout with product {}'s policy ({}) differs from the one without ({}): the route's timeout is the latter", product.name, product_timeout.map_or("default".to_owned(), |t| format!("{t} s")), timeout.map_or("default".to_owned(), |t| format!("{t} s"))));
            }
            if composed.document == base_document {
                product_policies.push((product.name.clone(), policy.clone()));
                continue;
            }
            mocked |= compose::contains(&composed.document, "mock-response");
            let (p, s, r) = self.convert(
                &format!("{name}.{}", product.name),
                &op.method,
                composed,
                &synthetic,
            );
            refused.extend(r);
            outcome.push_str(&format!(
                "; with a key of product {}: policy {p}: {}",
                product.name,
                self.summary(&s)
            ));
            product_policies.push((product.name.clone(), p));
        }
        if !refused.is_empty() {
            // no one policy enforces every check APIM runs: the operation is not served
            self.seen.remove(&key);
            let at: Vec<String> = refused
                .iter()
                .map(|pos| format!("{}:{}", self.folder.rel(pos.file), pos.line))
                .collect();
            let why = format!(
                "its policy has checks no one gateway policy enforces together ({}; see the findings there), so it is not imported and its requests are answered 404",
                at.join(", ")
            );
            return self.drop_operation(spec, op, &why);
        }
        let mut matching = vec![
            Entry::new("path", Node::str(template.path.as_str())),
            Entry::new("methods", Node::strings([op.method.as_str()])),
        ];
        match cx.version {
            Version::Header(h, v) => matching.push(Entry::new(
                "headers",
                Node::Map(vec![Entry::new(h.as_str(), Node::str(v.as_str()))]),
            )),
            Version::Query(q, v) => matching.push(Entry::new(
                "query",
                Node::Map(vec![Entry::new(q.as_str(), Node::str(v.as_str()))]),
            )),
            _ => {}
        }
        let mut sub = vec![
            Entry::new("api", Node::str(api.name.as_str())),
            Entry::new("required", Node::Bool(cx.required)),
        ];
        if let Some(h) = cx
            .header
            .filter(|h| !h.eq_ignore_ascii_case(DEFAULT_KEY_HEADER))
        {
            sub.push(Entry::new("header-name", Node::str(h)));
        }
        if let Some(q) = cx.query.filter(|q| *q != DEFAULT_KEY_QUERY) {
            sub.push(Entry::new("query-parameter-name", Node::str(q)));
        }
        if !product_policies.is_empty() {
            sub.push(Entry::new(
                "products",
                Node::Map(
                    product_policies
                        .iter()
                        .map(|(p, pol)| Entry::new(p.as_str(), Node::str(pol.as_str())))
                        .collect(),
                ),
            ));
        }
        if let Some(open) = cx.open_product {
            sub.push(
                Entry::new("open-product", Node::str(open))
                    .comment("does not require a subscription: calls without a key run its policy"),
            );
        }
        let mut route = vec![
            Entry::new("name", Node::str(name.as_str())),
            Entry::new("match", Node::Map(matching)),
            Entry::new("upstream", Node::str(cx.upstream)),
        ];
        if let Some(t) = timeout {
            route.push(
                Entry::new("timeout", Node::str(format!("{t}s")))
                    .comment("<forward-request timeout> of the composed policy"),
            );
        }
        route.extend([
            Entry::new("subscription", Node::Map(sub)),
            Entry::new("policy", Node::str(policy.as_str())),
        ]);
        if mocked {
            match (&op.id, spec.extension.as_str()) {
                (Some(id), "yaml" | "yml" | "json") => route.push(Entry::new(
                    "openapi",
                    Node::Map(vec![
                        Entry::new("spec", Node::str(spec.path.display().to_string())),
                        Entry::new("operation", Node::str(id.as_str())),
                    ]),
                )),
                _ => self.find(spec.file, op.line, Kind::Unsupported, "mock-response", format!("{} {}: the operation has no operationId, so its examples cannot be named: the mock answers with an empty body", op.method, op.template)),
            }
        }
        let item = Item::new(Node::Map(route)).comment(format!(
            "{} {} ({}:{})",
            op.method,
            op.template,
            self.folder.rel(spec.file),
            op.line
        ));
        self.routes.push(RouteOut {
            sort: (
                shape,
                u8::from(version_key.is_empty()),
                routes::method_rank(&op.method),
                name.clone(),
            ),
            item,
        });
        self.report.coverage.imported += 1;
        OperationReport {
            method: op.method.clone(),
            template: op.template.clone(),
            route: Some(name),
            outcome,
        }
    }

    /// Convert one composed policy called `name` for an operation of `method` (with the statements
    /// the route needs first); returns the policy the route uses, the statement count, and where
    /// checks are that no one policy enforces (then no policy is written: the operation must not be
    /// served).
    fn convert(
        &mut self,
        name: &str,
        method: &str,
        composed: Composed,
        synthetic: &[Entry],
    ) -> (String, Summary, Vec<Pos>) {
        let mut conv = Converter::composed(self.folder.rels.clone(), name);
        conv.in_folder = true;
        conv.method = Some(method.to_owned());
        conv.document(std::slice::from_ref(&composed.document));
        for (i, entry) in synthetic.iter().enumerate() {
            conv.steps.insert(
                i,
                Step {
                    pos: Pos::default(),
                    place: Place::Shared,
                    entry: Some(entry.clone()),
                    tallies: Vec::new(),
                    headers: Vec::new(),
                },
            );
        }
        let maps = &self.opts.map_upstream;
        for step in conv
            .steps
            .iter_mut()
            .chain(conv.out_steps.iter_mut())
            .skip(synthetic.len())
        {
            if let Some(entry) = step.entry.as_mut() {
                map_base_urls(entry, maps);
            }
        }
        for (id, pos) in &conv.backends {
            self.backend_refs.entry(id.clone()).or_insert(*pos);
        }
        let (entries, policy) = gateway::policies(&conv);
        let refused = std::mem::take(&mut conv.refused);
        if refused.is_empty() {
            self.policies.extend(entries);
        }
        let (diags, mut summary) = crate::finish(conv);
        for d in diags.iter().chain(&composed.diags) {
            self.diag(d);
        }
        summary.total += composed.dropped.len();
        summary.dropped.extend(composed.dropped);
        self.report.coverage.statements += summary.total;
        self.report.coverage.converted += summary.converted;
        (policy, summary, refused)
    }

    /// `converted 5/6 statements; dropped: file:line <x>`.
    fn summary(&self, s: &Summary) -> String {
        let list = |items: &[(Pos, String)]| {
            items
                .iter()
                .map(|(p, n)| format!("{}:{} <{n}>", self.folder.rel(p.file), p.line))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!("converted {}/{} statements", s.converted, s.total);
        if !s.dropped.is_empty() {
            out.push_str(&format!("; dropped: {}", list(&s.dropped)));
        }
        if !s.incomplete.is_empty() {
            out.push_str(&format!("; incomplete: {}", list(&s.incomplete)));
        }
        out
    }

    /// `subscriptions:` entries.
    fn subscriptions(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        for sub in &self.folder.subscriptions {
            let scope = str_prop(&sub.props, "scope").unwrap_or("");
            let trimmed = scope.trim_end_matches('/');
            let mut entries = Vec::new();
            let segment = |at: usize| trimmed[at..].split('/').next().unwrap_or("").to_owned();
            if let Some(i) = trimmed.rfind("/products/") {
                entries.push(Entry::new("scope", Node::str("product")));
                entries.push(Entry::new(
                    "product",
                    Node::str(segment(i + "/products/".len())),
                ));
            } else if let Some(i) = trimmed.rfind("/apis/") {
                entries.push(Entry::new("scope", Node::str("api")));
                entries.push(Entry::new("api", Node::str(segment(i + "/apis/".len()))));
            } else if trimmed.ends_with("/apis") {
                entries.push(Entry::new("scope", Node::str("all")));
            } else {
                self.find(sub.file, 1, Kind::Unsupported, "scope", format!("subscription {}: scope `{scope}` is not /products/<product>, /apis/<api> or /apis; left out", sub.name));
                continue;
            }
            if let Some(state) = str_prop(&sub.props, "state").map(str::to_ascii_lowercase) {
                if state != "active" {
                    entries.push(Entry::new("state", Node::str(state)));
                }
            }
            if sub.props.get("primaryKey").is_some() || sub.props.get("secondaryKey").is_some() {
                self.find(sub.file, 1, Kind::Note, "primaryKey", format!("subscription {}: the keys in the file are not written to gateway.yaml: give them to the gateway with --subscription-key {}=KEY", sub.name, sub.name));
            }
            out.push(Entry::new(sub.name.as_str(), Node::Map(entries)));
        }
        out
    }

    /// `backends:` for every backend a converted policy names.
    fn backends(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        let refs = std::mem::take(&mut self.backend_refs);
        for (id, pos) in refs {
            let found = self.folder.backends.iter().find(|b| b.name == id);
            let url = found
                .and_then(|b| str_prop(&b.props, "url"))
                .map(|u| self.map(u));
            let parsed = url.as_deref().and_then(|u| url::Url::parse(u).ok());
            match (found, parsed) {
                (Some(b), Some(u))
                    if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() =>
                {
                    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                    let text = format!(
                        "{}://{}{port}{}",
                        u.scheme(),
                        u.host_str().unwrap_or_default(),
                        u.path().trim_end_matches('/')
                    );
                    if u.query().is_some() {
                        self.find(
                            b.file,
                            1,
                            Kind::Unsupported,
                            "url",
                            format!("backend {id}: the query of its url is not forwarded"),
                        );
                    }
                    out.push(
                        Entry::new(
                            id.as_str(),
                            Node::Map(vec![Entry::new("url", Node::str(text))]),
                        )
                        .comment(format!("from {}", self.folder.rel(b.file))),
                    );
                }
                (Some(b), _) => {
                    self.find(b.file, 1, Kind::Unsupported, "backend", format!("backend {id} has no http(s) url (a pool or circuit breaker?): it is written as {DEFAULT_UPSTREAM}, to edit"));
                    out.push(Entry::new(
                        id.as_str(),
                        Node::Map(vec![Entry::new("url", Node::str(DEFAULT_UPSTREAM))]),
                    ));
                }
                (None, _) => {
                    self.find(pos.file, pos.line, Kind::Unsupported, "backend-id", format!("backend \"{id}\" is not in backends/: it is written as {DEFAULT_UPSTREAM}, to edit"));
                    out.push(Entry::new(
                        id.as_str(),
                        Node::Map(vec![Entry::new("url", Node::str(DEFAULT_UPSTREAM))]),
                    ));
                }
            }
        }
        out
    }

    /// Report the named values the policies use, and return the non-secret values the folder holds.
    fn named_values(&mut self) -> Vec<(String, String)> {
        let mut used: BTreeMap<String, Pos> = BTreeMap::new();
        let f = self.folder;
        let mut policies: Vec<&Policy> = f.global.iter().collect();
        policies.extend(f.products.iter().filter_map(|p| p.policy.as_ref()));
        for api in &f.apis {
            policies.extend(api.policy.iter());
            policies.extend(api.operation_policies.values());
        }
        policies.extend(f.fragments.values());
        for p in policies {
            for root in &p.roots {
                placeholders(root, &mut used);
            }
        }
        let mut out = Vec::new();
        for (name, pos) in used {
            let nv = f.named_values.iter().find(|nv| {
                str_prop(&nv.props, "displayName") == Some(name.as_str()) || nv.name == name
            });
            let var = env_name(&name);
            let Some(nv) = nv else {
                self.find(
                    pos.file,
                    pos.line,
                    Kind::Note,
                    "named value",
                    format!("{{{{{name}}}}} is not in named values/: set {var} in the environment"),
                );
                continue;
            };
            if let Some(kv) = nv
                .props
                .get("keyVault")
                .and_then(|k| str_prop(k, "secretIdentifier"))
            {
                self.find(nv.file, 1, Kind::Note, "keyVault", format!("{{{{{name}}}}} is a Key Vault reference ({kv}), not read: set {var} in the environment"));
            } else if bool_prop(&nv.props, "secret") == Some(true) {
                self.find(nv.file, 1, Kind::Note, "secret", format!("{{{{{name}}}}} is secret (its value is not written out): set {var} in the environment"));
            } else if let Some(value) = str_prop(&nv.props, "value") {
                self.find(nv.file, 1, Kind::Note, "value", format!("{{{{{name}}}}}'s value is in the folder: `run --apiops` uses it; with the written file, set {var} in the environment"));
                out.push((name.clone(), value.to_owned()));
            } else {
                self.find(
                    nv.file,
                    1,
                    Kind::Note,
                    "value",
                    format!(
                        "{{{{{name}}}}} has no value in the folder: set {var} in the environment"
                    ),
                );
            }
        }
        out
    }
}

/// What every route of one API shares.
struct OpContext<'a, 'f> {
    prefix: &'a str,
    version: &'a Version,
    upstream: &'a str,
    base: Option<&'a str>,
    required: bool,
    header: Option<&'a str>,
    query: Option<&'a str>,
    products: &'a [&'f folder::Product],
    /// The open product holding the API (calls without a key run its policy).
    open_product: Option<&'a str>,
}

/// Apply `--map-upstream` to every `base-url` in a converted statement (and those nested in it).
fn map_base_urls(entry: &mut Entry, maps: &[UpstreamMap]) {
    if entry.key == "base-url" {
        if let Node::Str(url) = &mut entry.value {
            if let Some(mapped) = map_upstream(maps, url) {
                *url = mapped;
            }
        }
    }
    match &mut entry.value {
        Node::Map(entries) => entries.iter_mut().for_each(|e| map_base_urls(e, maps)),
        Node::Seq(items) => {
            for item in items {
                if let Node::Map(entries) = &mut item.value {
                    entries.iter_mut().for_each(|e| map_base_urls(e, maps));
                }
            }
        }
        _ => {}
    }
}

/// Every `{{name}}` in an element's attributes and text (and its children's), with where first.
fn placeholders(el: &Element, out: &mut BTreeMap<String, Pos>) {
    let mut scan = |text: &str, pos: Pos| {
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            let name = after[..end].trim();
            if !name.is_empty() && !name.contains(['{', '}']) {
                out.entry(name.to_owned()).or_insert(pos);
            }
            rest = &after[end + 2..];
        }
    };
    for a in &el.attrs {
        scan(&a.value, a.pos);
    }
    scan(&el.text, el.pos);
    for c in &el.children {
        placeholders(c, out);
    }
}

/// The environment variable the loader also tries for `{{name}}` (upper case, `-` and `.` as `_`).
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn named_value_references_and_their_variables() {
        let roots = crate::xml::parse(
            "<policies><inbound><set-header name=\"{{h-name}}\"><value>a {{v.one}} b {{ v.one }}</value></set-header><x a=\"{{\"/></inbound></policies>",
        )
        .unwrap();
        let mut used = BTreeMap::new();
        placeholders(&roots[0], &mut used);
        assert_eq!(used.keys().collect::<Vec<_>>(), ["h-name", "v.one"]);
        assert_eq!(env_name("v.one-x"), "V_ONE_X");
    }

    #[test]
    fn base_urls_are_mapped_at_any_depth() {
        let maps: Vec<UpstreamMap> = vec!["https://a.example=http://127.0.0.1:1".parse().unwrap()];
        let mut entry = Entry::new(
            "choose",
            Node::Seq(vec![Item::new(Node::Map(vec![Entry::new(
                "set-backend-service",
                Node::Map(vec![Entry::new(
                    "base-url",
                    Node::str("https://a.example/x"),
                )]),
            )]))]),
        );
        map_base_urls(&mut entry, &maps);
        let Node::Seq(items) = &entry.value else {
            panic!()
        };
        let Node::Map(m) = &items[0].value else {
            panic!()
        };
        let Node::Map(inner) = &m[0].value else {
            panic!()
        };
        assert_eq!(inner[0].value, Node::str("http://127.0.0.1:1/x"));
    }
}
