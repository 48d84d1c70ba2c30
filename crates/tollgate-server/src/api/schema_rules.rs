//! Rules the server enforces between fields, which utoipa's derives cannot state: the request's
//! own limit comes as both fields or neither; a limit's `burst` and `calendar` depend on its
//! `algorithm`; a limit body is one limit or a list, not both; a batch change holds only its
//! `op`'s fields. They are added to the generated document as JSON Schema keywords (`anyOf`,
//! `additionalProperties`), so generated clients and the OpenAPI fuzz (`scripts/openapi-fuzz`)
//! see every rule the handlers apply.
//!
//! `null` counts as absent throughout, as it does for the server's optional fields.

use serde_json::{json, Value};
use utoipa::openapi::path::{Operation, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, RefOr, Required};

/// The path of the status operation, whose optional limit is two query parameters.
const STATUS_PATH: &str = "/api/status/{tenant}/{client}/{action}";

/// Adds the cross-field rules to `doc` (call after every route's schemas are collected).
pub fn apply(doc: &mut OpenApi) {
    if let Some(components) = doc.components.as_mut() {
        let schemas = &mut components.schemas;
        for name in ["CheckBody", "AdjustBody"] {
            if let Some(obj) = object(schemas.get_mut(name)) {
                keyword(obj, "anyOf", limit_pair());
            }
        }
        if let Some(obj) = object(schemas.get_mut("LimitSpec")) {
            keyword(obj, "anyOf", algorithm_rules());
            obj.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
        if let Some(obj) = object(schemas.get_mut("LimitList")) {
            obj.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
        if let Some(obj) = object(schemas.get_mut("LimitBody")) {
            keyword(obj, "anyOf", one_limit_or_list());
        }
        if let Some(RefOr::T(Schema::OneOf(one_of))) = schemas.get_mut("BatchChange") {
            for item in &mut one_of.items {
                if let RefOr::T(Schema::Object(obj)) = item {
                    obj.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
    if let Some(op) = doc
        .paths
        .paths
        .get_mut(STATUS_PATH)
        .and_then(|item| item.get.as_mut())
    {
        status_limit_as_one_parameter(op);
    }
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.put, &mut item.post].into_iter().flatten() {
            if op.request_body.is_some() {
                document_body_timeout(op);
            }
        }
    }
}

/// Every body is read under `--body-timeout` / `--body-min-rate` (a slow body is answered 408
/// `body_timeout`), whichever operation it is sent to.
fn document_body_timeout(op: &mut Operation) {
    let responses = &mut op.responses.responses;
    if responses.contains_key("408") {
        return;
    }
    let response = utoipa::openapi::ResponseBuilder::new()
        .description(
            "body_timeout: the body did not arrive within --body-timeout or at --body-min-rate; \
             the connection is closed",
        )
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("Error")))
                .build(),
        )
        .build();
    responses.insert("408".to_string(), RefOr::T(response));
}

fn object(schema: Option<&mut RefOr<Schema>>) -> Option<&mut Object> {
    match schema? {
        RefOr::T(Schema::Object(obj)) => Some(obj),
        _ => None,
    }
}

fn keyword(obj: &mut Object, key: &str, value: Value) {
    obj.extensions
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), value);
}

/// `max_requests` and `window_duration_seconds`: both given (non-null), or neither.
fn limit_pair() -> Value {
    json!([
        {
            "required": ["max_requests", "window_duration_seconds"],
            "properties": {
                "max_requests": {"type": "integer"},
                "window_duration_seconds": {"type": "number"}
            }
        },
        {
            "properties": {
                "max_requests": {"type": "null"},
                "window_duration_seconds": {"type": "null"}
            }
        }
    ])
}

/// What each algorithm takes: `burst` only with gcra, `calendar` only with fixed_window, and a
/// window unless a fixed window is aligned to a calendar period.
fn algorithm_rules() -> Value {
    json!([
        {
            "required": ["window_duration_seconds"],
            "properties": {
                "algorithm": {"enum": ["sliding_log", "sliding_window_counter", null]},
                "window_duration_seconds": {"type": "number"},
                "burst": {"type": "null"},
                "calendar": {"type": "null"}
            }
        },
        {
            "required": ["algorithm", "window_duration_seconds"],
            "properties": {
                "algorithm": {"const": "gcra"},
                "window_duration_seconds": {"type": "number"},
                "calendar": {"type": "null"}
            }
        },
        {
            "required": ["algorithm"],
            "properties": {
                "algorithm": {"const": "fixed_window"},
                "burst": {"type": "null"}
            },
            "anyOf": [
                {
                    "required": ["window_duration_seconds"],
                    "properties": {"window_duration_seconds": {"type": "number"}}
                },
                {
                    "required": ["calendar"],
                    "properties": {"calendar": {"type": "string"}}
                }
            ]
        }
    ])
}

/// A limit body: `{"limits": [...]}` with no other field, or one limit with no `limits`.
fn one_limit_or_list() -> Value {
    json!([
        {
            "required": ["limits"],
            "properties": {
                "limits": {"type": "array"},
                "max_requests": {"type": "null"},
                "window_duration_seconds": {"type": "null"},
                "algorithm": {"type": "null"},
                "burst": {"type": "null"},
                "calendar": {"type": "null"},
                "name": {"type": "null"},
                "shadow": {"type": "null"}
            }
        },
        {
            "required": ["max_requests"],
            "properties": {
                "max_requests": {"type": "integer"},
                "limits": {"type": "null"}
            },
            "anyOf": algorithm_rules()
        }
    ])
}

/// The status operation's optional limit is two query parameters that go together; OpenAPI can
/// only relate parameters inside one object parameter, so they become the properties of one
/// `form`-exploded object — the same query string (`?max_requests=5&window_duration_seconds=60`).
fn status_limit_as_one_parameter(op: &mut Operation) {
    let Some(params) = op.parameters.as_mut() else {
        return;
    };
    let mut pair = Vec::new();
    params.retain(|p| {
        let RefOr::T(p) = p else { return true };
        let in_pair = p.parameter_in == ParameterIn::Query
            && matches!(p.name.as_str(), "max_requests" | "window_duration_seconds");
        if in_pair {
            pair.extend(p.schema.clone().map(|s| (p.name.clone(), s)));
        }
        !in_pair
    });
    let builder = pair.into_iter().fold(
        ObjectBuilder::new().schema_type(Type::Object),
        |b, (name, schema)| b.property(name, schema),
    );
    let mut limit = builder
        .description(Some(
            "The caller's own limit, used only when no client or action limit is configured: \
             `max_requests` and `window_duration_seconds` (rounded to the nearest millisecond), \
             both or neither.",
        ))
        .build();
    keyword(&mut limit, "anyOf", limit_pair());
    params.push(RefOr::T(
        utoipa::openapi::path::ParameterBuilder::new()
            .name("limit")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .style(Some(ParameterStyle::Form))
            .explode(Some(true))
            .schema(Some(Schema::Object(limit)))
            .build(),
    ));
}
