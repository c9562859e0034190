//! Targeted conversions: each unsupported or unusual piece is reported at its position, and what can
//! be converted still is.

use portcullis_apim::{convert, Conversion};

fn conv(xml: &str) -> Conversion {
    convert(xml, "p.xml", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn report(c: &Conversion) -> String {
    c.report("p.xml")
}

const KEY: &str = "<issuer-signing-keys><key>c2VjcmV0</key></issuer-signing-keys>";

#[test]
fn bare_policy_elements_without_a_wrapper() {
    let c = conv(&format!(
        "<validate-jwt header-name=\"Authorization\" output-token-variable-name=\"t\">{KEY}</validate-jwt>\n<set-header name=\"X-Sub\"><value>@(((Jwt)context.Variables[\"t\"]).Subject)</value></set-header>"
    ));
    assert!(c.is_complete(), "{}", report(&c));
    assert!(
        c.yaml
            .contains("forward-claims:\n      # from p.xml:2\n      X-Sub: \"sub\"\n"),
        "{}",
        c.yaml
    );
}

#[test]
fn second_token_source_is_reported_and_the_first_kept() {
    let c = conv(&format!(
        "<validate-jwt header-name=\"X-A\" query-parameter-name=\"q\">{KEY}</validate-jwt>"
    ));
    assert_eq!(
        report(&c),
        "p.xml:1:33: unsupported query-parameter-name: APIM takes exactly one of header-name, query-parameter-name, token-value; the first is kept\n"
    );
    assert!(c.yaml.contains("header-name: \"X-A\"") && !c.yaml.contains("query-parameter-name"));
}

#[test]
fn missing_token_source_falls_back_to_authorization() {
    let c = conv(&format!("<validate-jwt>{KEY}</validate-jwt>"));
    assert!(
        report(&c).starts_with("p.xml:1:1: unsupported validate-jwt: no usable header-name"),
        "{}",
        report(&c)
    );
    assert!(c.yaml.contains("header-name: \"Authorization\""));
}

#[test]
fn claim_reads_of_unknown_tokens_are_reported() {
    let c = conv(&format!(
        "<policies><inbound>\n<validate-jwt header-name=\"X-Token\">{KEY}</validate-jwt>\n<set-header name=\"A\"><value>@(((Jwt)context.Variables[\"nope\"]).Subject)</value></set-header>\n<set-header name=\"B\"><value>@(context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Subject)</value></set-header>\n<set-header name=\"C\"><value>x</value><value>y</value></set-header>\n</inbound></policies>"
    ));
    let r = report(&c);
    assert!(
        r.contains("p.xml:3:22: unsupported set-header value: variable \"nope\""),
        "{r}"
    );
    assert!(
        r.contains("p.xml:4:22: unsupported set-header value: AsJwt() reads header Authorization"),
        "{r}"
    );
    assert!(!c.yaml.contains("forward-claims"), "{}", c.yaml);
    // several static values: a set-header statement
    assert!(
        c.yaml
            .contains("- set-header:\n          name: \"C\"\n          values:\n            - \"x\"\n            - \"y\"\n"),
        "{}",
        c.yaml
    );
    assert_eq!(
        c.summary.to_string(),
        "converted 2/4 statements; dropped: line 3 <set-header>, line 4 <set-header>"
    );
}

#[test]
fn as_jwt_on_the_policys_custom_header_is_converted() {
    let c = conv(&format!(
        "<validate-jwt header-name=\"X-Token\">{KEY}</validate-jwt><set-header name=\"X-Sub\" exists-action=\"override\"><value>@(context.Request.Headers.GetValueOrDefault(\"x-token\").AsJwt()?.Claims.GetValueOrDefault(\"oid\"))</value></set-header>"
    ));
    assert!(c.is_complete(), "{}", report(&c));
    assert!(c.yaml.contains("X-Sub: \"oid\""), "{}", c.yaml);
}

#[test]
fn deleting_another_header_is_a_set_header_statement() {
    let c = conv(&format!(
        "<validate-jwt header-name=\"Authorization\">{KEY}</validate-jwt><set-header name=\"Cookie\" exists-action=\"delete\" />"
    ));
    assert!(c.is_complete(), "{}", report(&c));
    assert!(
        c.yaml.contains(
            "- set-header:\n          name: \"Cookie\"\n          exists-action: \"delete\"\n"
        ),
        "{}",
        c.yaml
    );
    assert!(!c.yaml.contains("forward-token"));
}

#[test]
fn bad_values_keep_strict_defaults() {
    let c = conv(&format!(
        "<validate-jwt header-name=\"Authorization\" require-expiration-time=\"maybe\" clock-skew=\"PT5M\" failed-validation-httpcode=\"@(401)\" require-signed-tokens=\"@(false)\">{KEY}<required-claims><claim name=\"a\" match=\"some\"><value>@(context.Request.Url.Host)</value></claim></required-claims></validate-jwt>"
    ));
    let r = report(&c);
    for what in [
        "unsupported require-expiration-time: \"maybe\" is not true or false",
        "unsupported clock-skew: \"PT5M\" is not an integer",
        "unsupported failed-validation-httpcode: policy expressions",
        "unsupported require-signed-tokens: policy expressions",
        "unsupported match: \"some\" is not all or any",
        "unsupported value: policy expressions are not evaluated; kept literally",
    ] {
        assert!(r.contains(what), "{what}\n{r}");
    }
    for absent in [
        "require-expiration-time",
        "clock-skew",
        "failed-validation-httpcode",
        "require-signed-tokens",
        "match: \"",
    ] {
        assert!(!c.yaml.contains(absent), "{absent}\n{}", c.yaml);
    }
    assert!(
        c.yaml.contains("- \"@(context.Request.Url.Host)\""),
        "{}",
        c.yaml
    );
}

#[test]
fn key_problems_are_reported() {
    let c = conv(
        "<validate-jwt header-name=\"Authorization\"><issuer-signing-keys><key n=\"AQAB\" /><key /><key>@(context.Variables[\"k\"])</key><secret/></issuer-signing-keys><zumo-master-key>x</zumo-master-key><foo/></validate-jwt>",
    );
    let r = report(&c);
    for what in [
        "unsupported key: n and e must be given together",
        "unsupported key: has no key material",
        "unsupported key: policy expressions",
        "unsupported secret: not an issuer-signing-keys element",
        "unsupported zumo-master-key",
        "unsupported foo: not a validate-jwt element",
    ] {
        assert!(r.contains(what), "{what}\n{r}");
    }
    assert!(!c.yaml.contains("issuer-signing-keys"), "{}", c.yaml);
}

#[test]
fn azure_ad_token_without_tenant_and_with_sovereign_endpoint() {
    let c = conv("<validate-azure-ad-token authentication-endpoint=\"login.microsoftonline.us\" query-parameter-name=\"t\"><client-application-ids><application-id>app</application-id></client-application-ids></validate-azure-ad-token>");
    let r = report(&c);
    assert!(r.contains("unsupported authentication-endpoint"), "{r}");
    assert!(
        r.contains("unsupported validate-azure-ad-token: no usable tenant-id"),
        "{r}"
    );
    assert!(
        c.yaml.contains("tenant-id: \"common\"") && c.yaml.contains("query-parameter-name: \"t\""),
        "{}",
        c.yaml
    );
    assert!(c.yaml.contains("client-application-ids:"), "{}", c.yaml);
}

#[test]
fn sections_other_than_inbound_are_reported_per_policy() {
    let c = conv("<policies><inbound><base /></inbound><backend><forward-request timeout=\"10\" /></backend><outbound><set-header name=\"X\"><value>v</value></set-header></outbound><extra /></policies>");
    let r = report(&c);
    assert!(
        r.contains("unsupported forward-request: backend policies"),
        "{r}"
    );
    assert!(r.contains("unsupported extra: not a policy section"), "{r}");
    assert!(
        c.yaml.contains("  p:\n    outbound:\n      # from p.xml:1\n      - set-header:\n          name: \"X\"\n          value: \"v\"\n")
            && c.yaml.contains("policy: \"p\""),
        "{}",
        c.yaml
    );
    assert_eq!(
        c.summary.to_string(),
        "converted 1/2 statements; dropped: line 1 <forward-request>"
    );
}

#[test]
fn invalid_xml_reports_line_and_column() {
    let e = convert("<policies>\n  <inbound attr=novalue>\n", "p.xml", &[]).unwrap_err();
    assert_eq!(e.pos.line, 2, "{e}");
    let e = convert("<a>&bogus;</a>", "p.xml", &[]).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

/// The APIOps extractor's default `rawxml` form holds expressions as authored (raw `"`, `&&`, `<`,
/// `>`); they convert exactly as the escaped form does.
#[test]
fn raw_and_escaped_expressions_convert_alike() {
    let raw = r#"<policies><inbound>
<choose>
  <when condition="@(context.Request.Headers.GetValueOrDefault("X-Tier","") == "gold" && context.Request.Method == "GET")">
    <set-header name="X-Route" exists-action="override"><value>gold</value></set-header>
  </when>
  <otherwise><return-response><set-status code="403" reason="Forbidden" /></return-response></otherwise>
</choose>
<rate-limit-by-key calls="10" renewal-period="60" counter-key="@(context.Request.Headers.GetValueOrDefault("X-Client",""))" increment-condition="@(context.Response.StatusCode >= 200 && context.Response.StatusCode < 300)" />
</inbound></policies>"#;
    let escaped = raw
        .replace("\"@(", "'@(")
        .replace(")\"", ")'")
        .replace("\"X-Tier\",\"\"", "&quot;X-Tier&quot;,&quot;&quot;")
        .replace("\"X-Client\",\"\"", "&quot;X-Client&quot;,&quot;&quot;")
        .replace("\"gold\" &&", "&quot;gold&quot; &amp;&amp;")
        .replace("\"GET\"", "&quot;GET&quot;")
        .replace(">= 200 &&", "&gt;= 200 &amp;&amp;")
        .replace("< 300", "&lt; 300");
    assert!(
        !escaped.contains("&&") && escaped.contains("&quot;"),
        "{escaped}"
    );
    let (raw, escaped) = (conv(raw), conv(&escaped));
    assert!(raw.is_complete(), "{}", report(&raw));
    assert_eq!(raw.yaml, escaped.yaml);
    assert_eq!(report(&raw), report(&escaped));
    for converted in [
        "- header:\n                    name: \"X-Tier\"\n                    equals: \"gold\"\n",
        "- method: \"GET\"\n",
        "increment-condition: \"2xx\"\n",
    ] {
        assert!(raw.yaml.contains(converted), "{converted}\n{}", raw.yaml);
    }
}
