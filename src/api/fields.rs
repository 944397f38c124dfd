//! Request body fields: one JSON object, read with the types Vault clients send and an
//! error that names the field, what it got, and what it needs.

use std::num::IntErrorKind;

use serde_json::{Map, Value};

use crate::duration;
use crate::error::{Error, Result};
use crate::redact;
use crate::role::json_kind;

/// A request's JSON body. Fields are taken out as they are read, so the leftovers are the
/// ones the endpoint does not know.
pub struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// Parses `body`. An empty body is an empty object when `empty_allowed`, else an error.
    pub fn parse(body: &[u8], empty_allowed: bool) -> Result<Self> {
        let text = std::str::from_utf8(body).map_err(|error| {
            Error::invalid(format!(
                "request body is not valid UTF-8 (invalid byte at position {}); send JSON text",
                error.valid_up_to()
            ))
        })?;
        if text.trim().is_empty() {
            if empty_allowed {
                return Ok(Self { map: Map::new() });
            }
            return Err(Error::invalid("request body is empty; send a JSON object"));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|error| Error::invalid(format!("request body is not valid JSON: {error}")))?;
        match value {
            Value::Object(map) => Ok(Self { map }),
            other => Err(Error::invalid(format!(
                "request body must be a JSON object, got {}",
                json_kind(&other)
            ))),
        }
    }

    /// Returns a warning naming the fields no handler read, as Vault does.
    pub fn unknown_fields_warning(&self) -> Option<String> {
        if self.map.is_empty() {
            return None;
        }
        let names: Vec<&str> = self.map.keys().map(String::as_str).collect();
        Some(format!(
            "Endpoint ignored these unrecognized parameters: [{}]",
            redact::truncate(&names.join(" "), 200)
        ))
    }

    /// Takes an optional string field.
    pub fn string(&mut self, name: &str) -> Result<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(wrong_type(name, "a string", &other)),
        }
    }

    /// Takes a duration field: whole seconds as a JSON number, or duration text.
    pub fn duration(&mut self, name: &str) -> Result<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            // JSON's -0 and integers below i64::MIN arrive as negative floats.
            Some(Value::Number(number)) => match number.as_i64() {
                Some(seconds) if seconds < 0 => Err(negative(name, &number)),
                Some(seconds) => Ok(Some(seconds.to_string())),
                None if number.as_f64().is_some_and(f64::is_sign_negative) => {
                    Err(negative(name, &number))
                }
                None => Err(Error::invalid(format!(
                    "{name} must be whole seconds up to {} (100 years) or a duration string \
                     such as \"1h\", got {number}",
                    duration::MAX_SECONDS
                ))),
            },
            Some(other) => Err(wrong_type(
                name,
                "whole seconds or a duration string",
                &other,
            )),
        }
    }

    /// Takes a non-negative integer field; numeric strings are accepted, as Vault does.
    pub fn unsigned(&mut self, name: &str) -> Result<Option<u64>> {
        let invalid = |shown: String| {
            Error::invalid(format!(
                "{name} must be a non-negative integer, got {shown}"
            ))
        };
        let too_large = |shown: String| {
            Error::invalid(format!(
                "{name} is too large: {shown} does not fit in 64 bits; use a smaller integer"
            ))
        };
        match self.take(name) {
            None => Ok(None),
            // Integers above u64::MAX arrive as floats.
            Some(Value::Number(number)) => match number.as_u64() {
                Some(value) => Ok(Some(value)),
                None if number
                    .as_f64()
                    .is_some_and(|value| value >= u64::MAX as f64) =>
                {
                    Err(too_large(number.to_string()))
                }
                None => Err(invalid(number.to_string())),
            },
            Some(Value::String(text)) => match text.trim().parse::<u64>() {
                Ok(value) => Ok(Some(value)),
                Err(error) if *error.kind() == IntErrorKind::PosOverflow => {
                    Err(too_large(quoted(&text)))
                }
                Err(_) => Err(invalid(quoted(&text))),
            },
            Some(other) => Err(wrong_type(name, "a non-negative integer", &other)),
        }
    }

    /// Takes a number field; numeric strings are accepted, as Vault does.
    pub fn number(&mut self, name: &str) -> Result<Option<f64>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(number)) => Ok(number.as_f64()),
            Some(Value::String(text)) => text.trim().parse::<f64>().map(Some).map_err(|_| {
                Error::invalid(format!("{name} must be a number, got {}", quoted(&text)))
            }),
            Some(other) => Err(wrong_type(name, "a number", &other)),
        }
    }

    /// Takes a list of strings.
    pub fn string_list(&mut self, name: &str) -> Result<Option<Vec<String>>> {
        let items = match self.take(name) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type(name, "a list of strings", &other)),
        };
        items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                other => Err(wrong_type(name, "a list of strings", &other)),
            })
            .collect::<Result<Vec<String>>>()
            .map(Some)
    }

    /// Takes an object field as JSON text; `null` is kept as `null`.
    pub fn object_text(&mut self, name: &str) -> Result<Option<String>> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(value @ (Value::Object(_) | Value::Null)) => Ok(Some(value.to_string())),
            Some(other) => Err(Error::invalid(format!(
                "{name} must be a JSON object, got a JSON {}",
                json_kind(&other)
            ))),
        }
    }

    /// Removes a field; `null` counts as absent, as Vault clients send it for unset ones.
    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|value| !value.is_null())
    }
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> Error {
    Error::invalid(format!(
        "{name} must be {expected}, got a JSON {}",
        json_kind(got)
    ))
}

fn negative(name: &str, number: &serde_json::Number) -> Error {
    Error::invalid(format!(
        "{name} must not be negative, got {number}; use 0 for the default"
    ))
}

fn quoted(text: &str) -> String {
    format!("{:?}", redact::truncate(text, 64))
}
