//! Recognises the few APIM policy-expression shapes that have a gateway.yaml equivalent: a claim of
//! the validated token read into a header (-> `forward-claims`), a token read from a header or
//! query parameter (`token-value` -> `header-name` / `query-parameter-name`), a rate-limit counter
//! key (client IP, header, claim) and an `increment-condition` on the response status.
//!
//! Why shapes and not a C# parser: APIM expressions are arbitrary C#; only a handful of idioms appear
//! in real policies for these two jobs. Anything else is reported as unsupported, never guessed at.
//! Matching works on the expression with whitespace outside string literals removed, so spacing and
//! line breaks do not matter.

/// Whether a value is a policy expression (`@(...)` or `@{...}`).
pub fn is_expression(value: &str) -> bool {
    let v = value.trim_start();
    v.starts_with("@(") || v.starts_with("@{")
}

/// Which token a claim read refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtSource {
    /// A context variable holding a `Jwt` (validate-jwt's output-token-variable-name).
    Variable(String),
    /// `AsJwt()` on a request header.
    Header(String),
}

/// `set-header` value reading one claim of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRead {
    /// The token.
    pub source: JwtSource,
    /// Claim name (`Subject` -> `sub`, `Issuer` -> `iss`, `Id` -> `jti`).
    pub claim: String,
    /// A non-empty default value given in the expression (not reproducible in forward-claims).
    pub default: Option<String>,
}

/// Where a `token-value` expression reads the token from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRead {
    /// A header (for `Authorization`, a `Bearer ` prefix may have been stripped by the expression).
    Header(String),
    /// A query parameter.
    Query(String),
}

/// Recognise a claim read: `@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("oid", ""))`,
/// `@(context.Variables.GetValueOrDefault<Jwt>("jwt")?.Subject)`,
/// `@(context.Request.Headers.GetValueOrDefault("Authorization","").AsJwt()?.Claims["tid"])` ...
pub fn claim_read(expr: &str) -> Option<ClaimRead> {
    let body = normalise(expr)?;
    let mut c = Cursor(&body);
    let source = jwt_source(&mut c)?;
    c.accessor();
    let (claim, default) = claim_accessor(&mut c)?;
    let default = match default {
        Some(d) => Some(d),
        None if c.eat("??") => Some(c.string()?),
        None => None,
    };
    c.end()?;
    Some(ClaimRead {
        source,
        claim,
        default: default.filter(|d| !d.is_empty()),
    })
}

/// Recognise a simple token read for `token-value`:
/// `@(context.Request.Headers.GetValueOrDefault("X-Token", ""))`, optionally with
/// `.Replace("Bearer ", "")` or `.Split(' ').Last()` on `Authorization`, or
/// `@(context.Request.Url.Query.GetValueOrDefault("access_token", ""))`.
pub fn token_read(expr: &str) -> Option<TokenRead> {
    let body = normalise(expr)?;
    let mut c = Cursor(&body);
    let read = if c.eat("context.Request.Url.Query.GetValueOrDefault(") {
        TokenRead::Query(c.args_close()?)
    } else {
        let header = header_read(&mut c)?;
        if c.strip_scheme() && !header.eq_ignore_ascii_case("authorization") {
            return None;
        }
        TokenRead::Header(header)
    };
    c.end()?;
    Some(read)
}

/// What a `counter-key` expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRead {
    /// `context.Request.IpAddress`.
    ClientIp,
    /// `context.Request.Headers.GetValueOrDefault("H"[, "d"])`.
    Header(String),
    /// A claim of a token, in any shape [`claim_read`] recognises.
    Claim(ClaimRead),
}

/// Recognise a counter key: `@(context.Request.IpAddress)`,
/// `@(context.Request.Headers.GetValueOrDefault("X-Client", ""))` or a claim read
/// (`@(context.Request.Headers.GetValueOrDefault("Authorization","").AsJwt()?.Subject)`,
/// `@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("tid",""))` ...).
pub fn counter_key(expr: &str) -> Option<KeyRead> {
    let body = normalise(expr)?;
    let mut c = Cursor(&body);
    if c.eat("context.Request.IpAddress") {
        return c.end().map(|()| KeyRead::ClientIp);
    }
    let mut h = Cursor(&body);
    if let Some(header) = header_read(&mut h) {
        if h.end().is_some() {
            return Some(KeyRead::Header(header));
        }
    }
    claim_read(expr).map(KeyRead::Claim)
}

/// First status of the final responses an `increment-condition` is evaluated over (1xx answers
/// are not final).
pub const FIRST_STATUS: u16 = 200;
/// Last status an `increment-condition` is evaluated over.
pub const LAST_STATUS: u16 = 599;

/// Evaluate an `increment-condition` expression over the response status: for each final status
/// from [`FIRST_STATUS`] to [`LAST_STATUS`], whether it counts. Recognised: comparisons (`==`,
/// `!=`, `<`, `<=`, `>`, `>=`) of `context.Response.StatusCode` (optionally `(int)`-cast or
/// divided by an integer, as in `StatusCode / 100 == 2`) with integers, combined with `&&`, `||`,
/// `!` and parentheses. `None`: any other expression.
pub fn status_condition(expr: &str) -> Option<Vec<bool>> {
    let body = normalise(expr)?;
    let ast = {
        let mut c = Cursor(&body);
        let ast = cond_or(&mut c)?;
        c.end()?;
        ast
    };
    Some(
        (FIRST_STATUS..=LAST_STATUS)
            .map(|status| ast.eval(i64::from(status)))
            .collect(),
    )
}

/// A parsed status condition.
enum Cond {
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Cmp(Operand, &'static str, Operand),
}

/// The status (divided by `.1` when not 1) or an integer.
enum Operand {
    Status(i64),
    Int(i64),
}

impl Operand {
    fn value(&self, status: i64) -> i64 {
        match self {
            Operand::Status(div) => status / div,
            Operand::Int(i) => *i,
        }
    }
}

impl Cond {
    fn eval(&self, status: i64) -> bool {
        match self {
            Cond::Not(c) => !c.eval(status),
            Cond::And(a, b) => a.eval(status) && b.eval(status),
            Cond::Or(a, b) => a.eval(status) || b.eval(status),
            Cond::Cmp(a, op, b) => {
                let (a, b) = (a.value(status), b.value(status));
                match *op {
                    "==" => a == b,
                    "!=" => a != b,
                    "<=" => a <= b,
                    ">=" => a >= b,
                    "<" => a < b,
                    _ => a > b,
                }
            }
        }
    }
}

fn cond_or(c: &mut Cursor<'_>) -> Option<Cond> {
    let mut left = cond_and(c)?;
    while c.eat("||") {
        left = Cond::Or(Box::new(left), Box::new(cond_and(c)?));
    }
    Some(left)
}

fn cond_and(c: &mut Cursor<'_>) -> Option<Cond> {
    let mut left = cond_unary(c)?;
    while c.eat("&&") {
        left = Cond::And(Box::new(left), Box::new(cond_unary(c)?));
    }
    Some(left)
}

fn cond_unary(c: &mut Cursor<'_>) -> Option<Cond> {
    if c.0.starts_with("!=") {
        return None;
    }
    if c.eat("!") {
        return Some(Cond::Not(Box::new(cond_unary(c)?)));
    }
    let saved = c.0;
    if c.eat("(") && !c.0.starts_with("int)") {
        if let Some(inner) = cond_or(c) {
            if c.eat(")") {
                return Some(inner);
            }
        }
    }
    c.0 = saved;
    let left = operand(c)?;
    let op = ["==", "!=", "<=", ">=", "<", ">"]
        .into_iter()
        .find(|op| c.eat(op))?;
    let right = operand(c)?;
    Some(Cond::Cmp(left, op, right))
}

fn operand(c: &mut Cursor<'_>) -> Option<Operand> {
    c.eat("(int)");
    if c.eat("context.Response.StatusCode") {
        let div = if c.eat("/") { c.integer()? } else { 1 };
        return (div > 0).then_some(Operand::Status(div));
    }
    c.integer().map(Operand::Int)
}

/// `context.Request.Headers.GetValueOrDefault("H"[, "default"])` -> `H`.
pub(crate) fn header_read(c: &mut Cursor<'_>) -> Option<String> {
    if c.eat("context.Request.Headers.GetValueOrDefault(") {
        c.args_close()
    } else {
        None
    }
}

pub(crate) fn jwt_source(c: &mut Cursor<'_>) -> Option<JwtSource> {
    if c.eat("((Jwt)context.Variables[") {
        let name = c.string()?;
        c.eat("])").then_some(JwtSource::Variable(name))
    } else if c.eat("((Jwt)context.Variables.GetValueOrDefault(") {
        let name = c.args_close()?;
        c.eat(")").then_some(JwtSource::Variable(name))
    } else if c.eat("context.Variables.GetValueOrDefault<Jwt>(") {
        c.args_close().map(JwtSource::Variable)
    } else {
        let header = header_read(c)?;
        c.strip_scheme();
        c.eat(".AsJwt()").then_some(JwtSource::Header(header))
    }
}

/// `Subject` | `Issuer` | `Id` | `Claims["x"]` | `Claims.GetValueOrDefault("x"[, "d"])`.
pub(crate) fn claim_accessor(c: &mut Cursor<'_>) -> Option<(String, Option<String>)> {
    for (property, claim) in [("Subject", "sub"), ("Issuer", "iss"), ("Id", "jti")] {
        if c.eat(property) {
            return Some((claim.to_owned(), None));
        }
    }
    if c.eat("Claims[") {
        let name = c.string()?;
        if !c.eat("]") {
            return None;
        }
        if c.accessor() && !c.eat("FirstOrDefault()") {
            return None;
        }
        return Some((name, None));
    }
    if c.eat("Claims.GetValueOrDefault(") {
        let name = c.string()?;
        let default = if c.eat(",") { Some(c.string()?) } else { None };
        return c.eat(")").then_some((name, default));
    }
    None
}

/// The expression body without `@(` `)` and without whitespace outside literals.
pub(crate) fn normalise(expr: &str) -> Option<String> {
    let body = expr.trim().strip_prefix("@(")?.strip_suffix(')')?;
    let mut out = String::with_capacity(body.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in body.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
                out.push(ch);
            }
            None if ch.is_whitespace() => {}
            None => {
                if ch == '"' || ch == '\'' {
                    quote = Some(ch);
                }
                out.push(ch);
            }
        }
    }
    (quote.is_none()).then_some(out)
}

/// A cursor over a normalised expression.
pub(crate) struct Cursor<'s>(pub(crate) &'s str);

impl Cursor<'_> {
    pub(crate) fn eat(&mut self, lit: &str) -> bool {
        match self.0.strip_prefix(lit) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    /// `?.` or `.`
    pub(crate) fn accessor(&mut self) -> bool {
        self.eat("?.") || self.eat(".")
    }

    /// A C# string literal (`"..."`, backslash escapes).
    pub(crate) fn string(&mut self) -> Option<String> {
        let rest = self.0.strip_prefix('"')?;
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '"' => {
                    self.0 = &rest[i + 1..];
                    return Some(out);
                }
                '\\' => out.push(match chars.next()?.1 {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    other => other,
                }),
                other => out.push(other),
            }
        }
        None
    }

    /// `"name"[, "default"])` -> name (the default of a header or query read does not matter: an
    /// empty value is a missing token either way).
    pub(crate) fn args_close(&mut self) -> Option<String> {
        let name = self.string()?;
        if self.eat(",") {
            self.string()?;
        }
        self.eat(")").then_some(name)
    }

    /// `.Replace("Bearer ", "")` or `.Split(' ').Last()` (or `.Split(' ')[1]`); true when eaten.
    pub(crate) fn strip_scheme(&mut self) -> bool {
        self.eat(".Replace(\"Bearer \",\"\")")
            || self.eat(".Split(' ').Last()")
            || self.eat(".Split(' ')[1]")
    }

    /// A non-negative decimal integer.
    pub(crate) fn integer(&mut self) -> Option<i64> {
        let digits = self.0.bytes().take_while(u8::is_ascii_digit).count();
        let n = self.0.get(..digits)?.parse().ok()?;
        self.0 = &self.0[digits..];
        Some(n)
    }

    pub(crate) fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, claim: &str) -> Option<ClaimRead> {
        Some(ClaimRead {
            source: JwtSource::Variable(name.into()),
            claim: claim.into(),
            default: None,
        })
    }

    #[test]
    fn cast_variable_shapes() {
        assert_eq!(
            claim_read(r#"@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("oid", ""))"#),
            var("jwt", "oid")
        );
        assert_eq!(
            claim_read(r#"@( ((Jwt) context.Variables["jwt"]).Claims["tid"] )"#),
            var("jwt", "tid")
        );
        assert_eq!(
            claim_read(r#"@(((Jwt)context.Variables["jwt"]).Claims["tid"].FirstOrDefault())"#),
            var("jwt", "tid")
        );
        assert_eq!(
            claim_read(r#"@(((Jwt)context.Variables.GetValueOrDefault("t")).Subject)"#),
            var("t", "sub")
        );
    }

    #[test]
    fn generic_variable_shapes() {
        assert_eq!(
            claim_read(
                r#"@(context.Variables.GetValueOrDefault<Jwt>("jwt")?.Claims.GetValueOrDefault("roles"))"#
            ),
            var("jwt", "roles")
        );
        assert_eq!(
            claim_read(r#"@(context.Variables.GetValueOrDefault<Jwt>("jwt")?.Issuer)"#),
            var("jwt", "iss")
        );
        assert_eq!(
            claim_read(r#"@(context.Variables.GetValueOrDefault<Jwt>("jwt")?.Id ?? "")"#),
            var("jwt", "jti")
        );
    }

    #[test]
    fn as_jwt_on_header() {
        let read = claim_read(
            r#"@(context.Request.Headers.GetValueOrDefault("Authorization","").AsJwt()?.Subject)"#,
        );
        assert_eq!(
            read,
            Some(ClaimRead {
                source: JwtSource::Header("Authorization".into()),
                claim: "sub".into(),
                default: None
            })
        );
        let split = claim_read(
            r#"@(context.Request.Headers.GetValueOrDefault("Authorization","").Split(' ').Last().AsJwt()?.Claims["upn"])"#,
        );
        assert_eq!(split.map(|r| r.claim), Some("upn".to_owned()));
    }

    #[test]
    fn defaults_are_kept_when_not_empty() {
        let read = claim_read(
            r#"@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("oid", "anonymous"))"#,
        );
        assert_eq!(read.and_then(|r| r.default), Some("anonymous".to_owned()));
    }

    #[test]
    fn other_expressions_are_not_claim_reads() {
        for e in [
            r#"@(context.Request.IpAddress)"#,
            r#"@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("oid", "").ToUpper())"#,
            r#"@{ return "x"; }"#,
            r#"@(((Jwt)context.Variables["jwt"]).Audiences)"#,
            "plain",
        ] {
            assert_eq!(claim_read(e), None, "{e}");
        }
    }

    #[test]
    fn counter_keys() {
        assert_eq!(
            counter_key("@(context.Request.IpAddress)"),
            Some(KeyRead::ClientIp)
        );
        assert_eq!(
            counter_key(r#"@(context.Request.Headers.GetValueOrDefault("X-Client", ""))"#),
            Some(KeyRead::Header("X-Client".into()))
        );
        assert_eq!(
            counter_key(r#"@( context.Request.Headers.GetValueOrDefault("X-Client") )"#),
            Some(KeyRead::Header("X-Client".into()))
        );
        let sub = counter_key(
            r#"@(context.Request.Headers.GetValueOrDefault("Authorization","").AsJwt()?.Subject)"#,
        );
        assert_eq!(
            sub,
            Some(KeyRead::Claim(ClaimRead {
                source: JwtSource::Header("Authorization".into()),
                claim: "sub".into(),
                default: None
            }))
        );
        assert_eq!(
            counter_key(r#"@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("tid",""))"#),
            var("jwt", "tid").map(KeyRead::Claim)
        );
        for e in [
            "@(context.Subscription.Id)",
            "@(context.Request.IpAddress + \"x\")",
            "@(context.Request.IpAddressX)",
            r#"@(context.Request.Headers.GetValueOrDefault("X-Client", "").ToLower())"#,
            "context.Request.IpAddress",
        ] {
            assert_eq!(counter_key(e), None, "{e}");
        }
    }

    /// The statuses from 200 to 599 for which `f` holds.
    fn statuses(f: impl Fn(u16) -> bool) -> Option<Vec<bool>> {
        Some((FIRST_STATUS..=LAST_STATUS).map(f).collect())
    }

    #[test]
    fn status_conditions() {
        let two = statuses(|s| (200..300).contains(&s));
        for e in [
            "@(context.Response.StatusCode >= 200 && context.Response.StatusCode < 300)",
            "@(context.Response.StatusCode < 300 && 200 <= context.Response.StatusCode)",
            "@((int)context.Response.StatusCode / 100 == 2)",
            "@(context.Response.StatusCode < 300)",
        ] {
            assert_eq!(status_condition(e), two, "{e}");
        }
        assert_eq!(
            status_condition(
                "@(!(context.Response.StatusCode >= 400 && context.Response.StatusCode < 500))"
            ),
            statuses(|s| !(400..500).contains(&s))
        );
        assert_eq!(
            status_condition(
                "@(context.Response.StatusCode < 400 || context.Response.StatusCode > 499)"
            ),
            statuses(|s| !(400..500).contains(&s))
        );
        assert_eq!(
            status_condition("@(context.Response.StatusCode != 429)"),
            statuses(|s| s != 429)
        );
        assert_eq!(
            status_condition("@(context.Response.StatusCode == 200)"),
            statuses(|s| s == 200)
        );
        for e in [
            "@(context.Response.StatusCode)",
            "@(context.Response.StatusCode = 200)",
            "@(context.Response.StatusCode == 200 &&)",
            "@(context.Request.Method == 200)",
            "@(context.Response.StatusCode / 0 == 2)",
            "@(context.Response.StatusCode == 200))",
            "true",
        ] {
            assert_eq!(status_condition(e), None, "{e}");
        }
    }

    #[test]
    fn token_reads() {
        assert_eq!(
            token_read(r#"@(context.Request.Headers.GetValueOrDefault("X-Token", ""))"#),
            Some(TokenRead::Header("X-Token".into()))
        );
        assert_eq!(
            token_read(
                r#"@(context.Request.Headers.GetValueOrDefault("Authorization","").Replace("Bearer ", ""))"#
            ),
            Some(TokenRead::Header("Authorization".into()))
        );
        assert_eq!(
            token_read(r#"@(context.Request.Url.Query.GetValueOrDefault("access_token"))"#),
            Some(TokenRead::Query("access_token".into()))
        );
        assert_eq!(
            token_read(
                r#"@(context.Request.Headers.GetValueOrDefault("X-Token","").Replace("Bearer ", ""))"#
            ),
            None
        );
        assert_eq!(token_read(r#"@((string)context.Variables["token"])"#), None);
    }
}
