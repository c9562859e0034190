//! Strict JSON for token headers and claims.
//!
//! Why it exists: `serde_json` silently keeps the last of two equal keys, so `{"sub":"a","sub":"b"}`
//! would mean different things to us and to another parser that keeps the first. A token whose JSON
//! two parsers could read differently is rejected: this visitor builds `serde_json` values while
//! refusing duplicate keys at every depth. Nesting depth stays bounded by `serde_json`'s recursion
//! limit (128), which turns into an error, never a stack overflow.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// A JSON object parsed with duplicate keys rejected at every depth.
pub(crate) struct StrictObject(pub(crate) Map<String, Value>);

/// A JSON value parsed with duplicate keys rejected at every depth (and serde_json's nesting limit).
pub(crate) struct StrictValue(pub(crate) Value);

impl StrictObject {
    /// Parse bytes that must hold exactly one JSON object.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_slice::<StrictObject>(bytes).map(|o| o.0)
    }
}

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor).map(StrictObject)
    }
}

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(StrictValue)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(value) = map.next_value()?;
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(_) => return Err(de::Error::custom("duplicate key")),
            }
        }
        Ok(out)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        ObjectVisitor.visit_map(map).map(Value::Object)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::StrictObject;

    #[test]
    fn duplicate_keys_are_rejected_at_any_depth() {
        assert!(StrictObject::parse(br#"{"a":1,"a":2}"#).is_err());
        assert!(StrictObject::parse(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(StrictObject::parse(br#"{"a":[{"b":1,"b":1}]}"#).is_err());
        assert_eq!(
            StrictObject::parse(br#"{"a":{"b":[1,"x",null,true,1.5]}}"#)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn only_objects_and_bounded_depth() {
        assert!(StrictObject::parse(b"[1]").is_err());
        assert!(StrictObject::parse(b"\"x\"").is_err());
        assert!(StrictObject::parse(br#"{"a":1} x"#).is_err());
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(StrictObject::parse(deep.as_bytes()).is_err());
    }
}
