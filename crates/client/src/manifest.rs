//! Splitting a manifest (multi-document YAML, JSON, `*List` objects) into objects.

use serde::Deserialize as _;
use serde_json::Value;

use crate::Error;

/// One object of a manifest, with the document it came from.
#[derive(Debug)]
pub(crate) struct Doc {
    pub(crate) document: usize,
    pub(crate) object: Value,
}

/// Parses `text` into objects, expanding `kind: *List` documents and top-level
/// JSON arrays, and checks each has `apiVersion`, `kind` and `metadata.name`.
pub(crate) fn parse(text: &str) -> Result<Vec<Doc>, Error> {
    let trimmed = text.trim_start();
    let mut raw: Vec<(usize, Value)> = Vec::new();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let v = v.map_err(|e| Error::Manifest {
                document: i,
                message: format!("invalid JSON: {e}"),
            })?;
            raw.push((i, v));
        }
    } else {
        for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(de).map_err(|e| Error::Manifest {
                document: i,
                message: format!("invalid YAML: {e}"),
            })?;
            raw.push((i, v));
        }
    }
    let mut out = Vec::new();
    for (document, v) in raw {
        match v {
            Value::Null => {}
            Value::Array(items) => {
                for (j, item) in items.into_iter().enumerate() {
                    out.push(check(document, &format!("[{j}]: "), item)?);
                }
            }
            Value::Object(ref map)
                if map
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && map.get("items").is_some() =>
            {
                let Some(items) = map.get("items").and_then(Value::as_array) else {
                    return Err(Error::Manifest {
                        document,
                        message: "items must be a list".into(),
                    });
                };
                for (j, item) in items.iter().enumerate() {
                    out.push(check(document, &format!("items[{j}]: "), item.clone())?);
                }
            }
            other => out.push(check(document, "", other)?),
        }
    }
    Ok(out)
}

fn check(document: usize, at: &str, v: Value) -> Result<Doc, Error> {
    let err = |message: String| Error::Manifest { document, message };
    let Value::Object(map) = &v else {
        return Err(err(format!(
            "{at}expected an object, found {}",
            kind_of(&v)
        )));
    };
    for field in ["apiVersion", "kind"] {
        match map.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Err(err(format!("{at}{field} must be a non-empty string"))),
            None => return Err(err(format!("{at}missing {field}"))),
        }
    }
    match map.get("metadata").and_then(|m| m.get("name")) {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err(err(format!("{at}metadata.name must be a non-empty string"))),
        None => return Err(err(format!("{at}missing metadata.name"))),
    }
    if let Some(ns) = map.get("metadata").and_then(|m| m.get("namespace")) {
        if !ns.is_string() {
            return Err(err(format!("{at}metadata.namespace must be a string")));
        }
    }
    Ok(Doc {
        document,
        object: v,
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_empty_documents_and_lists() {
        let docs = parse(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n\
             - {apiVersion: v1, kind: Secret, metadata: {name: c, namespace: x}}\n",
        )
        .expect("parse");
        let names: Vec<_> = docs
            .iter()
            .map(|d| (d.document, d.object["metadata"]["name"].as_str().unwrap()))
            .collect();
        assert_eq!(names, vec![(0, "a"), (2, "b"), (2, "c")]);
    }

    #[test]
    fn json_stream_and_array() {
        let docs = parse(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}
               [{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]"#,
        )
        .expect("parse");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].document, 1);
    }

    #[test]
    fn errors_name_the_document_and_field() {
        let e = parse(
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata: {name: b}\n",
        )
        .expect_err("missing apiVersion");
        match e {
            Error::Manifest { document, message } => {
                assert_eq!(document, 1);
                assert!(message.contains("apiVersion"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let e = parse("apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\nkey: [unclosed\n")
            .expect_err("bad yaml");
        assert!(
            matches!(&e, Error::Manifest { document: 1, message } if message.contains("YAML")),
            "{e:?}"
        );
        let e =
            parse("{\"apiVersion\": \"v1\", \"kind\": \"A\", \"metadata\": {}}").expect_err("name");
        assert!(
            matches!(&e, Error::Manifest { document: 0, message } if message.contains("metadata.name")),
            "{e:?}"
        );
        let e = parse("- 1\n").expect_err("scalar item");
        assert!(
            matches!(&e, Error::Manifest { document: 0, message } if message.contains("[0]")),
            "{e:?}"
        );
    }
}
