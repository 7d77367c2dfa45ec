//! JSON values kept as compact bytes in the order the client wrote them.
//!
//! A JSON-format key or value is stored as its JSON text. Going through
//! `serde_json::Value` would sort object keys, so a client reading back
//! `{"b":1,"a":2}` would see `{"a":2,"b":1}`; this transcoder writes each
//! token as it is read instead. It reads through serde's visitor, so
//! serde_json's depth limit still guards against deeply nested input.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// One JSON value as compact UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactJson(pub Vec<u8>);

impl CompactJson {
    /// Validates `bytes` as exactly one JSON value and returns it compacted.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The value as a string, when it is a JSON string.
    pub fn as_string(&self) -> Option<String> {
        serde_json::from_slice(&self.0).ok()
    }
}

impl<'de> Deserialize<'de> for CompactJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        Writer(&mut out).deserialize(deserializer)?;
        Ok(Self(out))
    }
}

/// A produced key or value as the body gave it: a JSON string kept as its
/// text (what the binary format decodes as base64, with no transcoding;
/// borrowed from the body when it has no escapes), or any other JSON value
/// as compact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Embedded<'a> {
    /// A JSON string's contents, unescaped.
    Str(Cow<'a, str>),
    /// Any other JSON value, compact.
    Other(CompactJson),
}

impl Embedded<'_> {
    /// Appends the value as compact JSON text to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            // Serializing a string into a Vec cannot fail.
            Self::Str(text) => {
                let _ = serde_json::to_writer(&mut *out, text.as_ref());
            }
            Self::Other(json) => out.extend_from_slice(&json.0),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Embedded<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EmbeddedVisitor(std::marker::PhantomData))
    }
}

struct EmbeddedVisitor<'a>(std::marker::PhantomData<&'a ()>);

/// Strings are kept; everything else goes to a [`Writer`].
macro_rules! other {
    ($name:ident, $t:ty) => {
        fn $name<E: serde::de::Error>(self, v: $t) -> Result<Embedded<'a>, E> {
            let mut out = Vec::new();
            Writer(&mut out).$name(v)?;
            Ok(Embedded::Other(CompactJson(out)))
        }
    };
}

impl<'de: 'a, 'a> Visitor<'de> for EmbeddedVisitor<'a> {
    type Value = Embedded<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Embedded<'a>, E> {
        Ok(Embedded::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Embedded<'a>, E> {
        Ok(Embedded::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Embedded<'a>, E> {
        Ok(Embedded::Str(Cow::Owned(v)))
    }

    other!(visit_bool, bool);
    other!(visit_i64, i64);
    other!(visit_u64, u64);
    other!(visit_f64, f64);

    fn visit_unit<E: serde::de::Error>(self) -> Result<Embedded<'a>, E> {
        Ok(Embedded::Other(CompactJson(b"null".to_vec())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Embedded<'a>, A::Error> {
        let mut out = Vec::new();
        Writer(&mut out).visit_seq(seq)?;
        Ok(Embedded::Other(CompactJson(out)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Embedded<'a>, A::Error> {
        let mut out = Vec::new();
        Writer(&mut out).visit_map(map)?;
        Ok(Embedded::Other(CompactJson(out)))
    }
}

/// Writes the value it visits to the buffer.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn scalar<T: serde::Serialize + ?Sized, E: serde::de::Error>(self, v: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.0, v).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Writer<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Writer<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(v)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            // The separator goes in before we know whether an element
            // follows; it is taken back at the end of the array.
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if seq.next_element_seed(Writer(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'{');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if map.next_key_seed(Writer(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            out.push(b':');
            map.next_value_seed(Writer(&mut *out))?;
            first = false;
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(text: &str) -> String {
        let value = CompactJson::from_slice(text.as_bytes()).expect("valid JSON");
        String::from_utf8(value.0).expect("UTF-8")
    }

    #[test]
    fn keeps_key_order_and_drops_whitespace() {
        assert_eq!(
            compact(r#" { "b" : 1, "a" : [ true, null, "x\"y", -2, 1.5, {} , [] ] } "#),
            r#"{"b":1,"a":[true,null,"x\"y",-2,1.5,{},[]]}"#
        );
    }

    #[test]
    fn scalars_round_trip() {
        for text in [
            "0",
            "-7",
            "18446744073709551615",
            "0.25",
            "\"é\\n\"",
            "null",
            "false",
        ] {
            let once = compact(text);
            assert_eq!(compact(&once), once, "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_one_json_value() {
        for text in ["", "{", "1 2", "[1,]", "nul", "\"\\ud800\""] {
            assert!(CompactJson::from_slice(text.as_bytes()).is_none(), "{text}");
        }
        assert!(CompactJson::from_slice(b"\"\xff\"").is_none());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(CompactJson::from_slice(deep.as_bytes()).is_none());
    }

    #[test]
    fn strings_are_read_back() {
        let value = CompactJson::from_slice(br#""aGk=""#).unwrap();
        assert_eq!(value.as_string().as_deref(), Some("aGk="));
        assert_eq!(CompactJson::from_slice(b"1").unwrap().as_string(), None);
    }
}
