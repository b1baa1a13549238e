//! YAML documents read through yaml-rust2 and handed on as
//! `serde_json::Value`, so the rest of ferry deserialises them with serde
//! like any JSON (a JSON document is YAML too). One document only; aliases
//! are refused (no expansion bombs), nesting is bounded, mapping keys must
//! be scalars. Pure.

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

const MAX_DEPTH: usize = 64;

fn convert(y: &Yaml, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(s.clone()), Value::Number),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(
            a.iter()
                .map(|v| convert(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Null => "null".into(),
                    _ => return Err("a mapping key that is not a scalar".into()),
                };
                if m.insert(key.clone(), convert(v, depth + 1)?).is_some() {
                    return Err(format!("duplicate key {key:?}"));
                }
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => return Err("aliases (*name) are not supported".into()),
        Yaml::BadValue => return Err("a value that is not valid YAML".into()),
    })
}

/// Scans the events first: an alias anywhere is refused before the loader
/// would copy what it names (an alias of an alias of ... is exponential).
struct NoAliases {
    alias: bool,
    depth: usize,
    deepest: usize,
}

impl yaml_rust2::parser::EventReceiver for NoAliases {
    fn on_event(&mut self, ev: yaml_rust2::Event) {
        use yaml_rust2::Event;
        match ev {
            Event::Alias(_) => self.alias = true,
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                self.depth += 1;
                self.deepest = self.deepest.max(self.depth);
            }
            Event::SequenceEnd | Event::MappingEnd => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
    }
}

/// The one document in `text` (empty text: null).
pub fn parse(text: &str) -> Result<Value, String> {
    let mut scan = NoAliases {
        alias: false,
        depth: 0,
        deepest: 0,
    };
    yaml_rust2::parser::Parser::new_from_str(text)
        .load(&mut scan, true)
        .map_err(|e| e.to_string())?;
    if scan.alias {
        return Err("aliases (*name) are not supported".into());
    }
    if scan.deepest > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.as_slice() {
        [] => Ok(Value::Null),
        [d] => convert(d, 0),
        _ => Err(format!("{} documents; one expected", docs.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_flow_and_json_styles_agree() {
        let block = "a: 1\nb:\n  - x\n  - 'y'\nc: {d: true, e: null}\nf: 1.5\n";
        let flow = "{a: 1, b: [x, \"y\"], c: {d: true, e: ~}, f: 1.5}";
        let json = r#"{"a": 1, "b": ["x", "y"], "c": {"d": true, "e": null}, "f": 1.5}"#;
        let want: Value = serde_json::from_str(json).unwrap();
        for t in [block, flow, json] {
            assert_eq!(parse(t).unwrap(), want, "{t}");
        }
        assert_eq!(parse("").unwrap(), Value::Null);
    }

    #[test]
    fn refuses_what_it_cannot_represent_safely() {
        for (t, why) in [
            ("a: &x [1]\nb: *x\n", "aliases"),
            ("a: 1\n---\nb: 2\n", "documents"),
            ("a: 1\na: 2\n", "duplicate"),
            ("? [1, 2]\n: x\n", "not a scalar"),
            ("a: [1, 2\n", ""),
        ] {
            let e = parse(t).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&deep).is_err());
    }
}
