//! The APIM expression shapes that become gateway.yaml value sources (`${header:X}`, `${claim:c}`,
//! `${var:v}` ...) and `choose` conditions (`{method: GET}`, `{header: {name, equals}}` ...).
//!
//! Why shapes and not C#: as in [`crate::expr`], only the idioms real policies use to read the
//! request are recognised, each with a gateway.yaml equivalent that gives the same answer; anything
//! else is `None` and the caller reports it and leaves the statement out, so nothing is ever
//! evaluated differently from APIM without a report. The parsers work on the expression with the
//! whitespace outside string literals removed ([`crate::expr::normalise`]).

use crate::expr::{self, claim_accessor, jwt_source, Cursor, JwtSource};

/// What one `${...}` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `context.Request.Headers.GetValueOrDefault("X")`.
    Header(String),
    /// `context.Request.Url.Query.GetValueOrDefault("q")`.
    Query(String),
    /// `context.Request.MatchedParameters["p"]`.
    Param(String),
    /// A claim of the token `.0` (the `AsJwt()` and output-token-variable shapes).
    Claim(JwtSource, String),
    /// `context.Variables["v"]`.
    Var(String),
    /// `context.Request.IpAddress`.
    ClientIp,
    /// `context.Request.Method`.
    Method,
    /// `context.Request.Url.Path`.
    Path,
    /// `context.Request.Url.Host`.
    Host,
}

/// One piece of a value: literal text or a source with an optional default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text (named values `{{x}}` included).
    Lit(String),
    /// A source and its default (`GetValueOrDefault("X", "d")`, `?? "d"`).
    Src(Source, Option<String>),
}

/// A value: a literal or an expression made of the shapes above joined with `+` or `$"..{..}.."`.
/// `None`: an expression in any other shape.
pub fn value(text: &str) -> Option<Vec<Part>> {
    if !expr::is_expression(text) {
        return Some(vec![Part::Lit(text.to_owned())]);
    }
    let body = body(text)?;
    let mut c = Cursor(&body);
    let parts = concat(&mut c)?;
    c.end()?;
    Some(merge(parts))
}

/// `@(x)` or `@{ return x; }` -> the normalised `x`.
fn body(text: &str) -> Option<String> {
    let t = text.trim();
    if let Some(block) = t.strip_prefix("@{").and_then(|b| b.strip_suffix('}')) {
        let inner = block.trim().strip_prefix("return")?;
        if !inner.starts_with(|c: char| c.is_whitespace() || c == '(' || c == '"' || c == '$') {
            return None;
        }
        let inner = inner.trim().strip_suffix(';')?;
        return expr::normalise(&format!("@({inner})"));
    }
    expr::normalise(t)
}

fn merge(parts: Vec<Part>) -> Vec<Part> {
    let mut out: Vec<Part> = Vec::new();
    for p in parts {
        match (out.last_mut(), p) {
            (Some(Part::Lit(a)), Part::Lit(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

/// `term ('+' term)*`
fn concat(c: &mut Cursor<'_>) -> Option<Vec<Part>> {
    let mut parts = term(c)?;
    while c.eat("+") {
        parts.extend(term(c)?);
    }
    Some(parts)
}

fn term(c: &mut Cursor<'_>) -> Option<Vec<Part>> {
    if c.0.starts_with('"') {
        return c.string().map(|s| vec![Part::Lit(s)]);
    }
    if c.eat("$\"") {
        return interpolation(c);
    }
    let saved = c.0;
    if let Some(p) = source_term(c) {
        return Some(vec![p]);
    }
    c.0 = saved;
    if c.eat("(") {
        let inner = concat(c)?;
        return c.eat(")").then_some(inner);
    }
    None
}

/// A source, optionally `.ToString()` and `?? "default"` (a default given twice is refused).
fn source_term(c: &mut Cursor<'_>) -> Option<Part> {
    c.eat("(string)");
    let (src, mut default) = source(c)?;
    c.eat(".ToString()");
    if c.eat("??") {
        if default.is_some() {
            return None;
        }
        default = Some(c.string()?);
    }
    Some(Part::Src(src, default.filter(|d| !d.is_empty())))
}

/// A source read; the default of a `GetValueOrDefault("x", "d")`.
fn source(c: &mut Cursor<'_>) -> Option<(Source, Option<String>)> {
    let simple = [
        ("context.Request.IpAddress", Source::ClientIp),
        ("context.Request.Method", Source::Method),
        ("context.Request.Url.Path", Source::Path),
        ("context.Request.Url.Host", Source::Host),
    ];
    for (lit, src) in simple {
        let saved = c.0;
        if c.eat(lit) && !c.0.starts_with(|ch: char| ch.is_ascii_alphanumeric()) {
            return Some((src, None));
        }
        c.0 = saved;
    }
    let getter = |c: &mut Cursor<'_>, prefix: &str| -> Option<Option<(String, Option<String>)>> {
        if !c.eat(prefix) {
            return Some(None);
        }
        let name = c.string()?;
        let default = if c.eat(",") { Some(c.string()?) } else { None };
        c.eat(")").then_some(Some((name, default)))
    };
    let indexer = |c: &mut Cursor<'_>, prefix: &str| -> Option<Option<String>> {
        if !c.eat(prefix) {
            return Some(None);
        }
        let name = c.string()?;
        c.eat("]").then_some(Some(name))
    };
    let saved = c.0;
    if let Some((n, d)) = getter(c, "context.Request.Headers.GetValueOrDefault(")? {
        // a header read followed by more (AsJwt(), Split ...) is not a plain header read
        let more = c.0.starts_with('.') || c.0.starts_with("?.");
        if more && !c.0.starts_with(".Equals(") && !c.0.starts_with(".ToString()") {
            c.0 = saved;
        } else {
            return Some((Source::Header(n), d));
        }
    }
    if let Some((n, d)) = getter(c, "context.Request.Url.Query.GetValueOrDefault(")? {
        return Some((Source::Query(n), d));
    }
    if let Some((n, d)) = getter(c, "context.Request.MatchedParameters.GetValueOrDefault(")? {
        return Some((Source::Param(n), d));
    }
    if let Some(n) = indexer(c, "context.Request.MatchedParameters[")? {
        return Some((Source::Param(n), None));
    }
    for prefix in [
        "context.Variables.GetValueOrDefault<string>(",
        "context.Variables.GetValueOrDefault(",
    ] {
        if let Some((n, d)) = getter(c, prefix)? {
            return Some((Source::Var(n), d));
        }
    }
    if let Some(n) = indexer(c, "context.Variables[")? {
        return Some((Source::Var(n), None));
    }
    let claim = claim(c)?;
    Some((Source::Claim(claim.0, claim.1), claim.2))
}

/// A claim read (the shapes of [`crate::expr::claim_read`]): token, claim name, default.
fn claim(c: &mut Cursor<'_>) -> Option<(JwtSource, String, Option<String>)> {
    let token = jwt_source(c)?;
    c.accessor();
    let (name, default) = claim_accessor(c)?;
    Some((token, name, default))
}

/// The rest of `$"...{expr}..."` after `$"`.
fn interpolation(c: &mut Cursor<'_>) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut chars = c.0.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => {
                c.0 = &c.0[i + 1..];
                if !lit.is_empty() {
                    parts.push(Part::Lit(lit));
                }
                return Some(parts);
            }
            '\\' => lit.push(match chars.next()?.1 {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            }),
            '{' if c.0[i + 1..].starts_with('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if c.0[i + 1..].starts_with('}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let start = i + 1;
                let end = hole_end(&c.0[start..])? + start;
                let inner = expr::normalise(&format!("@({})", &c.0[start..end]))?;
                let mut ic = Cursor(&inner);
                let hole = concat(&mut ic)?;
                ic.end()?;
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.extend(hole);
                // skip past the closing brace
                for (j, _) in chars.by_ref() {
                    if j == end {
                        break;
                    }
                }
            }
            '}' => return None,
            other => lit.push(other),
        }
    }
    None
}

/// The offset of the `}` closing an interpolation hole (strings inside it skipped).
fn hole_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                quote = false;
            }
            continue;
        }
        match ch {
            '"' => quote = true,
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            ':' => return None, // a format specifier
            _ => {}
        }
    }
    None
}

/// A `choose` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `context.Request.Method == "GET"`.
    Method(String),
    /// `context.Request.Headers.ContainsKey("X")`.
    HeaderPresent(String),
    /// A request header compared with a literal (`ignore-case` for `OrdinalIgnoreCase`).
    Header(String, String, bool),
    /// `context.Request.Url.Query.ContainsKey("q")`.
    QueryPresent(String),
    /// A query parameter compared with a literal.
    Query(String, String),
    /// A claim equal to a literal.
    ClaimEquals(JwtSource, String, String),
    /// An array claim containing a literal element (`Claims["roles"].Contains("admin")`).
    ClaimContains(JwtSource, String, String),
    /// `....Claims.ContainsKey("tid")`.
    ClaimPresent(JwtSource, String),
    /// A variable equal to a literal.
    Variable(String, String),
    /// `context.Request.Url.Path.StartsWith("/x")`.
    PathPrefix(String),
    /// The response statuses (100-599) for which a `context.Response.StatusCode` comparison holds.
    Status(Vec<u16>),
    /// `&&`.
    All(Vec<Cond>),
    /// `||`.
    Any(Vec<Cond>),
    /// `!`, `!=`.
    Not(Box<Cond>),
}

/// Parse a `<when condition>`; `None` for any other shape.
pub fn condition(text: &str) -> Option<Cond> {
    let body = body(text)?;
    let mut c = Cursor(&body);
    let cond = or(&mut c)?;
    c.end()?;
    Some(cond)
}

fn or(c: &mut Cursor<'_>) -> Option<Cond> {
    let mut items = vec![and(c)?];
    while c.eat("||") {
        items.push(and(c)?);
    }
    Some(if items.len() == 1 {
        items.remove(0)
    } else {
        Cond::Any(items)
    })
}

fn and(c: &mut Cursor<'_>) -> Option<Cond> {
    let mut items = vec![unary(c)?];
    while c.eat("&&") {
        items.push(unary(c)?);
    }
    Some(if items.len() == 1 {
        items.remove(0)
    } else {
        Cond::All(items)
    })
}

fn unary(c: &mut Cursor<'_>) -> Option<Cond> {
    if c.0.starts_with("!=") {
        return None;
    }
    if c.eat("!") {
        return Some(Cond::Not(Box::new(unary(c)?)));
    }
    let saved = c.0;
    if c.eat("(") {
        if let Some(inner) = or(c) {
            if c.eat(")") {
                return Some(inner);
            }
        }
    }
    c.0 = saved;
    atom(c)
}

/// `== "lit"`, `!= "lit"`, `.Equals("lit"[, StringComparison.OrdinalIgnoreCase])`: the literal,
/// whether negated, whether case is ignored.
fn comparison(c: &mut Cursor<'_>) -> Option<(String, bool, bool)> {
    if c.eat("==") {
        return Some((c.string()?, false, false));
    }
    if c.eat("!=") {
        return Some((c.string()?, true, false));
    }
    if c.eat(".Equals(") {
        let lit = c.string()?;
        let ignore = c.eat(",StringComparison.OrdinalIgnoreCase");
        if !ignore {
            c.eat(",StringComparison.Ordinal"); // the default comparison
        }
        return c.eat(")").then_some((lit, false, ignore));
    }
    None
}

fn negate(cond: Cond, negated: bool) -> Cond {
    if negated {
        Cond::Not(Box::new(cond))
    } else {
        cond
    }
}

/// One literal `==` a read: `"GET" == context.Request.Method` is turned around.
fn atom(c: &mut Cursor<'_>) -> Option<Cond> {
    if c.0.starts_with('"') {
        let lit = c.string()?;
        let negated = if c.eat("==") {
            false
        } else if c.eat("!=") {
            true
        } else {
            return None;
        };
        let (src, default) = source(c)?;
        return compare(src, default, lit, negated, false);
    }
    if c.eat("context.Request.Headers.ContainsKey(") {
        return close(c).map(Cond::HeaderPresent);
    }
    if c.eat("context.Request.Url.Query.ContainsKey(") {
        return close(c).map(Cond::QueryPresent);
    }
    if c.eat("context.Request.Url.Path.StartsWith(") {
        return close(c).map(Cond::PathPrefix);
    }
    if c.0.starts_with("context.Response.StatusCode") || c.0.starts_with("(int)context.Response") {
        return status(c);
    }
    let saved = c.0;
    if let Some(token) = claims_of(c) {
        if c.eat("ContainsKey(") {
            return close(c).map(|n| Cond::ClaimPresent(token, n));
        }
        if c.eat("[") {
            let claim = c.string()?;
            if !c.eat("]") {
                return None;
            }
            if c.eat(".Contains(") {
                let v = c.string()?;
                return c.eat(")").then_some(Cond::ClaimContains(token, claim, v));
            }
        }
    }
    c.0 = saved;
    c.eat("(string)");
    let (src, default) = source(c)?;
    c.eat(".ToString()");
    let (lit, negated, ignore) = comparison(c)?;
    compare(src, default, lit, negated, ignore)
}

/// A token followed by `.Claims.` or `.Claims[` (for `ContainsKey` and `[..].Contains`).
fn claims_of(c: &mut Cursor<'_>) -> Option<JwtSource> {
    let token = jwt_source(c)?;
    c.accessor();
    c.eat("Claims").then_some(())?;
    if c.0.starts_with('[') {
        return Some(token);
    }
    c.accessor().then_some(token)
}

/// `"x")` -> x
fn close(c: &mut Cursor<'_>) -> Option<String> {
    let s = c.string()?;
    c.eat(")").then_some(s)
}

fn compare(
    src: Source,
    default: Option<String>,
    lit: String,
    negated: bool,
    ignore: bool,
) -> Option<Cond> {
    // with a default equal to the literal, an absent value would compare equal too
    let absent_matches = default.as_deref().unwrap_or("") == lit;
    let cond = match src {
        Source::Method if !ignore && default.is_none() => Cond::Method(lit),
        Source::Header(h) => {
            if absent_matches {
                return None;
            }
            Cond::Header(h, lit, ignore)
        }
        Source::Query(q) if !ignore => {
            if absent_matches {
                return None;
            }
            Cond::Query(q, lit)
        }
        Source::Claim(token, name) if !ignore => {
            if absent_matches {
                return None;
            }
            Cond::ClaimEquals(token, name, lit)
        }
        Source::Var(v) if !ignore => {
            if absent_matches {
                return None;
            }
            Cond::Variable(v, lit)
        }
        _ => return None,
    };
    Some(negate(cond, negated))
}

/// A comparison of `context.Response.StatusCode` with an integer: the statuses 100-599 it holds for.
fn status(c: &mut Cursor<'_>) -> Option<Cond> {
    c.eat("(int)");
    if !c.eat("context.Response.StatusCode") {
        return None;
    }
    let op = ["==", "!=", "<=", ">=", "<", ">"]
        .into_iter()
        .find(|op| c.eat(op))?;
    let n = c.integer()?;
    let holds = |s: i64| match op {
        "==" => s == n,
        "!=" => s != n,
        "<=" => s <= n,
        ">=" => s >= n,
        "<" => s < n,
        _ => s > n,
    };
    Some(Cond::Status(
        (100u16..=599).filter(|s| holds(i64::from(*s))).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Part {
        Part::Lit(s.to_owned())
    }

    fn src(s: Source) -> Part {
        Part::Src(s, None)
    }

    #[test]
    fn literal_values_pass_through() {
        assert_eq!(value("plain {{nv}}"), Some(vec![lit("plain {{nv}}")]));
    }

    #[test]
    fn single_sources() {
        let h = Source::Header("X-Tenant".into());
        assert_eq!(
            value(r#"@(context.Request.Headers.GetValueOrDefault("X-Tenant"))"#),
            Some(vec![src(h.clone())])
        );
        assert_eq!(
            value(r#"@(context.Request.Headers.GetValueOrDefault("X-Tenant", "public"))"#),
            Some(vec![Part::Src(h, Some("public".into()))])
        );
        assert_eq!(
            value("@(context.Request.IpAddress)"),
            Some(vec![src(Source::ClientIp)])
        );
        assert_eq!(
            value(r#"@(context.Request.MatchedParameters["id"])"#),
            Some(vec![src(Source::Param("id".into()))])
        );
        assert_eq!(
            value(r#"@((string)context.Variables["tier"])"#),
            Some(vec![src(Source::Var("tier".into()))])
        );
        assert_eq!(
            value(r#"@(context.Variables.GetValueOrDefault<string>("tier", "free"))"#),
            Some(vec![Part::Src(
                Source::Var("tier".into()),
                Some("free".into())
            )])
        );
        assert_eq!(
            value(
                r#"@(context.Request.Headers.GetValueOrDefault("Authorization","").AsJwt()?.Subject)"#
            ),
            Some(vec![src(Source::Claim(
                JwtSource::Header("Authorization".into()),
                "sub".into()
            ))])
        );
    }

    #[test]
    fn concatenation_and_interpolation() {
        let want = Some(vec![
            lit("tenant-"),
            src(Source::Header("X-Tenant".into())),
            lit("/"),
            src(Source::Method),
        ]);
        assert_eq!(
            value(
                r#"@("tenant-" + context.Request.Headers.GetValueOrDefault("X-Tenant","") + "/" + context.Request.Method)"#
            ),
            want
        );
        assert_eq!(
            value(
                r#"@($"tenant-{context.Request.Headers.GetValueOrDefault("X-Tenant", "")}/{context.Request.Method}")"#
            ),
            want
        );
        assert_eq!(
            value(r#"@{ return "a" + context.Request.Url.Host; }"#),
            Some(vec![lit("a"), src(Source::Host)])
        );
        assert_eq!(value(r#"@($"{{x}}")"#), Some(vec![lit("{x}")]));
    }

    #[test]
    fn other_values_are_refused() {
        for e in [
            r#"@(context.Request.Headers.GetValueOrDefault("X","").ToUpper())"#,
            r#"@(DateTime.UtcNow.ToString())"#,
            r#"@($"{DateTime.UtcNow:o}")"#,
            r#"@(context.Request.Body.As<string>())"#,
            r#"@{ var x = 1; return "a"; }"#,
            r#"@(context.Subscription.Id)"#,
            r#"@(context.Request.IpAddressX)"#,
        ] {
            assert_eq!(value(e), None, "{e}");
        }
    }

    #[test]
    fn conditions() {
        assert_eq!(
            condition(r#"@(context.Request.Method == "POST")"#),
            Some(Cond::Method("POST".into()))
        );
        assert_eq!(
            condition(r#"@(context.Request.Method.Equals("GET"))"#),
            Some(Cond::Method("GET".into()))
        );
        assert_eq!(
            condition(
                r#"@(!context.Request.Headers.ContainsKey("X-Debug") || context.Request.Url.Path.StartsWith("/admin"))"#
            ),
            Some(Cond::Any(vec![
                Cond::Not(Box::new(Cond::HeaderPresent("X-Debug".into()))),
                Cond::PathPrefix("/admin".into())
            ]))
        );
        assert_eq!(
            condition(
                r#"@(context.Request.Headers.GetValueOrDefault("X-Tenant","") == "a" && (context.Request.Method != "GET"))"#
            ),
            Some(Cond::All(vec![
                Cond::Header("X-Tenant".into(), "a".into(), false),
                Cond::Not(Box::new(Cond::Method("GET".into())))
            ]))
        );
        let jwt = || JwtSource::Variable("jwt".into());
        assert_eq!(
            condition(r#"@(((Jwt)context.Variables["jwt"]).Claims["roles"].Contains("admin"))"#),
            Some(Cond::ClaimContains(jwt(), "roles".into(), "admin".into()))
        );
        assert_eq!(
            condition(
                r#"@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("tid", "") == "t1")"#
            ),
            Some(Cond::ClaimEquals(jwt(), "tid".into(), "t1".into()))
        );
        assert_eq!(
            condition(r#"@(((Jwt)context.Variables["jwt"]).Claims.ContainsKey("tid"))"#),
            Some(Cond::ClaimPresent(jwt(), "tid".into()))
        );
        assert_eq!(
            condition("@(context.Response.StatusCode == 200)"),
            Some(Cond::Status(vec![200]))
        );
        assert_eq!(
            condition(
                r#"@(context.Request.Headers.GetValueOrDefault("X", "").Equals("a", StringComparison.OrdinalIgnoreCase))"#
            ),
            Some(Cond::Header("X".into(), "a".into(), true))
        );
        assert_eq!(
            condition(r#"@((string)context.Variables["tier"] == "gold")"#),
            Some(Cond::Variable("tier".into(), "gold".into()))
        );
    }

    #[test]
    fn other_conditions_are_refused() {
        for e in [
            r#"@(context.Request.Headers.GetValueOrDefault("X","") == "")"#,
            r#"@(context.Request.Headers.GetValueOrDefault("X","a") == "a")"#,
            r#"@(((Jwt)context.Variables["jwt"]).Claims.GetValueOrDefault("roles","").Contains("admin"))"#,
            r#"@(context.Request.Body != null)"#,
            r#"@(context.Request.Method == "GET" &&)"#,
            r#"@(true)"#,
            r#"@(context.Variables.ContainsKey("x"))"#,
        ] {
            assert_eq!(condition(e), None, "{e}");
        }
    }
}
