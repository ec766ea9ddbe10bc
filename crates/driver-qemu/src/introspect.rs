//! Pass-through attributes (`device.NAME`, `blockdev.NAME`, `netdev.NAME`): string values turned
//! into the typed JSON QEMU wants, using QEMU's own introspection (`device-list-properties` for
//! device properties, `query-qmp-schema` for blockdev and netdev options). A name QEMU does not
//! know, or a value that does not fit its type, is refused before anything is created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use vdev_core::{Error, Result};

use crate::qmp::{decode, Qmp};

/// What QEMU told us about itself, cached for the life of one QMP session.
#[derive(Default)]
pub(crate) struct Introspection {
    device_props: Mutex<HashMap<String, Arc<HashMap<String, String>>>>,
    schema: OnceCell<Arc<Schema>>,
}

/// `query-qmp-schema`, indexed by (masked) type name.
pub(crate) struct Schema {
    by_name: HashMap<String, Value>,
}

impl Introspection {
    /// Property name → type name of a device model, from `device-list-properties`.
    async fn device_props(&self, qmp: &Qmp, model: &str) -> Result<Arc<HashMap<String, String>>> {
        if let Some(p) = self
            .device_props
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
        {
            return Ok(p.clone());
        }
        let props = qmp
            .execute(qapi::qmp::device_list_properties {
                typename: model.to_owned(),
            })
            .await
            .map_err(|e| e.into_core(&format!("asking QEMU for the properties of {model}")))?;
        let map: HashMap<String, String> = props.into_iter().map(|p| (p.name, p.type_)).collect();
        let map = Arc::new(map);
        self.device_props
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_owned(), map.clone());
        Ok(map)
    }

    async fn schema(&self, qmp: &Qmp) -> Result<Arc<Schema>> {
        self.schema
            .get_or_try_init(|| async {
                let v = qmp
                    .execute_raw("query-qmp-schema", Value::Object(Map::new()))
                    .await
                    .map_err(|e| e.into_core("reading QEMU's QMP schema"))?;
                let list: Vec<Value> = decode("query-qmp-schema", v)
                    .map_err(|e| e.into_core("reading QEMU's QMP schema"))?;
                let by_name = list
                    .into_iter()
                    .filter_map(|e| Some((e.get("name")?.as_str()?.to_owned(), e)))
                    .collect();
                Ok(Arc::new(Schema { by_name }))
            })
            .await
            .cloned()
    }

    /// Convert `device.NAME=VALUE` attributes for a device of `model` into `device_add`
    /// properties. `reserved` are the properties vdev sets itself (and the attribute to use).
    pub(crate) async fn device_properties(
        &self,
        qmp: &Qmp,
        model: &str,
        given: &[(String, String)],
        reserved: &[(&str, &str)],
    ) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        if given.is_empty() {
            return Ok(out);
        }
        let props = self.device_props(qmp, model).await?;
        for (name, value) in given {
            let attr = format!("device.{name}");
            if let Some((_, instead)) = reserved.iter().find(|(r, _)| r == name) {
                return Err(Error::invalid_attribute(
                    &attr,
                    format!(
                        "vdev sets the property '{name}' itself; use the attribute '{instead}'"
                    ),
                ));
            }
            let Some(ty) = props.get(name.as_str()) else {
                let mut known: Vec<&str> = props.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(Error::invalid_attribute(
                    &attr,
                    format!(
                        "QEMU's {model} has no property '{name}'; its properties: {}",
                        known.join(", ")
                    ),
                ));
            };
            let v = convert_qdev(name, ty, value).map_err(|why| {
                Error::invalid_attribute(
                    &attr,
                    format!("'{value}' does not fit the {ty} property '{name}' of {model}: {why}"),
                )
            })?;
            out.insert(name.clone(), v);
        }
        Ok(out)
    }

    /// Convert `PREFIX.PATH=VALUE` attributes for a QAPI union argument (`blockdev-add`'s
    /// `BlockdevOptions` with `driver=case`, `netdev_add`'s `Netdev` with `type=case`) into
    /// JSON members, merged into `into`. A path's `file.` part descends into the file node
    /// (case `file`). `reserved` are the members vdev sets itself.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn union_members(
        &self,
        qmp: &Qmp,
        prefix: &str,
        command: &str,
        case: &str,
        given: &[(String, String)],
        reserved: &[(&str, &str)],
        into: &mut Map<String, Value>,
    ) -> Result<()> {
        if given.is_empty() {
            return Ok(());
        }
        let schema = self.schema(qmp).await?;
        let root = schema
            .by_name
            .get(command)
            .and_then(|c| c.get("arg-type"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::backend(
                    crate::NAME,
                    format!("QEMU's schema has no command {command}"),
                )
            })?
            .to_owned();
        for (path, value) in given {
            let attr = format!("{prefix}.{path}");
            if let Some((_, instead)) = reserved.iter().find(|(r, _)| r == path) {
                return Err(Error::invalid_attribute(
                    &attr,
                    format!("vdev sets '{path}' itself; use the attribute '{instead}'"),
                ));
            }
            let parts: Vec<&str> = path.split('.').collect();
            let v = schema
                .convert_path(&root, Some(case), &parts, value)
                .map_err(|why| {
                    Error::invalid_attribute(&attr, format!("{why} ({command}, {case})"))
                })?;
            insert_path(into, &parts, v).map_err(|why| Error::invalid_attribute(&attr, why))?;
        }
        Ok(())
    }
}

fn insert_path(into: &mut Map<String, Value>, parts: &[&str], v: Value) -> Result<(), String> {
    let (last, dirs) = parts.split_last().expect("non-empty path");
    let mut cur = into;
    for d in dirs {
        let e = cur
            .entry(d.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = e
            .as_object_mut()
            .ok_or_else(|| format!("'{d}' is already given as a value"))?;
    }
    cur.insert(last.to_string(), v);
    Ok(())
}

impl Schema {
    fn get(&self, name: &str) -> Result<&Value, String> {
        self.by_name
            .get(name)
            .ok_or_else(|| format!("QEMU's schema lacks the type {name}"))
    }

    /// The type of member `name` of object type `ty` (with its variant `case`, if a union).
    fn member_type(
        &self,
        ty: &str,
        case: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, String> {
        let t = self.get(ty)?;
        let find = |obj: &Value| -> Option<String> {
            obj.get("members")?
                .as_array()?
                .iter()
                .find(|m| m.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|m| m.get("type")?.as_str().map(str::to_owned))
        };
        if let Some(t) = find(t) {
            return Ok(Some(t));
        }
        if let (Some(case), Some(vars)) = (case, t.get("variants").and_then(Value::as_array)) {
            if let Some(vt) = vars
                .iter()
                .find(|v| v.get("case").and_then(Value::as_str) == Some(case))
                .and_then(|v| v.get("type")?.as_str())
            {
                return Ok(find(self.get(vt)?));
            }
        }
        Ok(None)
    }

    fn convert_path(
        &self,
        ty: &str,
        case: Option<&str>,
        parts: &[&str],
        value: &str,
    ) -> Result<Value, String> {
        let (first, rest) = parts.split_first().ok_or("an empty option name")?;
        let Some(mt) = self.member_type(ty, case, first)? else {
            return Err(format!("QEMU knows no option '{first}' here"));
        };
        if rest.is_empty() {
            return self.convert_leaf(&mt, value);
        }
        // Descend: into an object, or the object branch of an alternate (BlockdevRef).
        let mut target = mt.clone();
        let info = self.get(&mt)?;
        if info.get("meta-type").and_then(Value::as_str) == Some("alternate") {
            target = info
                .get("members")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| m.get("type")?.as_str())
                .find(|t| {
                    self.get(t).ok().and_then(|i| i.get("meta-type")?.as_str()) == Some("object")
                })
                .ok_or_else(|| format!("'{first}' has no members"))?
                .to_owned();
        }
        let info = self.get(&target)?;
        if info.get("meta-type").and_then(Value::as_str) != Some("object") {
            return Err(format!("'{first}' is a single value and has no members"));
        }
        let sub_case = if *first == "file" { Some("file") } else { None };
        self.convert_path(&target, sub_case, rest, value)
    }

    fn convert_leaf(&self, ty: &str, value: &str) -> Result<Value, String> {
        let info = self.get(ty)?;
        match info.get("meta-type").and_then(Value::as_str) {
            Some("builtin") if ty == "size" => parse_size(value),
            Some("builtin") => match info.get("json-type").and_then(Value::as_str) {
                Some("int") => parse_int(value, i128::from(i64::MIN), i128::from(u64::MAX)),
                Some("number") => value
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| "not a number".to_owned()),
                Some("boolean") => parse_bool(value),
                Some("string") | Some("value") => Ok(Value::String(value.to_owned())),
                other => Err(format!(
                    "values of JSON type {other:?} cannot be given as a string"
                )),
            },
            Some("enum") => {
                let values: Vec<&str> = info
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if values.contains(&value) {
                    Ok(Value::String(value.to_owned()))
                } else {
                    Err(format!("'{value}' is not one of {}", values.join(", ")))
                }
            }
            Some("alternate") => {
                let mut errs = Vec::new();
                for t in info
                    .get("members")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.get("type")?.as_str())
                {
                    match self.convert_leaf(t, value) {
                        Ok(v) => return Ok(v),
                        Err(e) => errs.push(e),
                    }
                }
                Err(errs.join("; "))
            }
            Some("object") => Err("this option is a group: give its members as NAME.MEMBER".into()),
            Some("array") => Err("lists cannot be given as one attribute".into()),
            other => Err(format!("options of kind {other:?} are not supported")),
        }
    }
}

fn parse_bool(v: &str) -> Result<Value, String> {
    vdev_core::parse_bool(v)
        .map(Value::Bool)
        .ok_or_else(|| format!("not a boolean: write {}", vdev_core::BOOL_SPELLINGS))
}

fn parse_int(v: &str, min: i128, max: i128) -> Result<Value, String> {
    let n: i128 = if let Some(h) = v.strip_prefix("0x") {
        i128::from_str_radix(h, 16).map_err(|_| "not an integer".to_owned())?
    } else {
        v.parse().map_err(|_| "not an integer".to_owned())?
    };
    if n < min || n > max {
        return Err(format!("out of range {min}..={max}"));
    }
    Ok(if n < 0 {
        Value::from(n as i64)
    } else {
        Value::from(n as u64)
    })
}

fn parse_size(v: &str) -> Result<Value, String> {
    let (num, mul) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err("not a size: write bytes, or a number with K, M, G or T".into()),
            };
            (&v[..i], m)
        }
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .map(Value::from)
        .ok_or_else(|| "not a size: write bytes, or a number with K, M, G or T".into())
}

/// A qdev property value from its string, by the type `device-list-properties` reports.
fn convert_qdev(name: &str, ty: &str, v: &str) -> Result<Value, String> {
    let int = |min: i128, max: i128| parse_int(v, min, max);
    match ty {
        "bool" => parse_bool(v),
        "uint8" => int(0, u8::MAX.into()),
        "uint16" => int(0, u16::MAX.into()),
        "uint32" => int(0, u32::MAX.into()),
        "uint64" => int(0, u64::MAX.into()),
        "int8" => int(i8::MIN.into(), i8::MAX.into()),
        "int16" => int(i16::MIN.into(), i16::MAX.into()),
        // A PCI address ("addr") is an int32 that also takes "SLOT.FN".
        "int32" if name == "addr" => {
            int(i32::MIN.into(), i32::MAX.into()).or_else(|_| Ok(Value::String(v.to_owned())))
        }
        "int32" => int(i32::MIN.into(), i32::MAX.into()),
        "int64" => int(i64::MIN.into(), i64::MAX.into()),
        "size" => parse_size(v),
        "number" | "double" => v
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "not a number".to_owned()),
        // Strings, enums (OnOffAuto, BlockdevOnError...), MAC addresses, links: QEMU parses the
        // string itself and answers a clear error when it does not fit.
        _ => Ok(Value::String(v.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdev_values_are_typed() {
        assert_eq!(convert_qdev("x", "bool", "on").unwrap(), Value::Bool(true));
        assert_eq!(
            convert_qdev("x", "uint16", "7200").unwrap(),
            Value::from(7200u64)
        );
        assert!(convert_qdev("x", "uint16", "70000").is_err());
        assert!(convert_qdev("x", "uint32", "fast").is_err());
        assert_eq!(
            convert_qdev("x", "size", "4K").unwrap(),
            Value::from(4096u64)
        );
        assert_eq!(
            convert_qdev("addr", "int32", "2.0").unwrap(),
            Value::from("2.0")
        );
        assert_eq!(convert_qdev("x", "str", "abc").unwrap(), Value::from("abc"));
    }

    #[test]
    fn paths_nest() {
        let mut m = Map::new();
        insert_path(&mut m, &["file", "locking"], Value::from("off")).unwrap();
        insert_path(&mut m, &["file", "aio"], Value::from("threads")).unwrap();
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"file": {"locking": "off", "aio": "threads"}})
        );
    }
}
