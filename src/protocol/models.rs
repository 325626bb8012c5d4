//! Model lists as each API answers them: OpenAI's
//! `{"object":"list","data":[{"id","object":"model","created","owned_by"}]}`,
//! Anthropic's `{"data":[{"type":"model","id","display_name","created_at"}],
//! "has_more","first_id","last_id"}` (one page).

use serde_json::{json, Value};

use crate::vocab::ApiShape;

/// One model: its id and who serves it (`owned_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model<'a> {
    pub id: &'a str,
    pub owner: &'a str,
}

/// One model's object.
pub fn model(api: ApiShape, m: Model<'_>) -> Value {
    match api {
        ApiShape::OpenAi => {
            json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.owner})
        }
        ApiShape::Anthropic => json!({
            "type": "model",
            "id": m.id,
            "display_name": m.id,
            "created_at": "1970-01-01T00:00:00Z",
        }),
    }
}

/// The whole list, as one page.
pub fn list(api: ApiShape, models: &[Model<'_>]) -> Value {
    let data: Vec<Value> = models.iter().map(|m| model(api, *m)).collect();
    match api {
        ApiShape::OpenAi => json!({"object": "list", "data": data}),
        ApiShape::Anthropic => json!({
            "data": data,
            "has_more": false,
            "first_id": models.first().map(|m| m.id),
            "last_id": models.last().map(|m| m.id),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes() {
        let listed = [
            Model {
                id: "a",
                owner: "sluice",
            },
            Model {
                id: "b",
                owner: "oa",
            },
        ];
        let o = list(ApiShape::OpenAi, &listed);
        assert_eq!(o["object"], "list");
        assert_eq!(o["data"][1]["owned_by"], "oa");
        assert_eq!(o["data"][0]["object"], "model");
        let a = list(ApiShape::Anthropic, &listed);
        assert_eq!(a["data"][0]["type"], "model");
        assert_eq!(
            (a["first_id"].clone(), a["last_id"].clone()),
            (json!("a"), json!("b"))
        );
        assert_eq!(a["has_more"], false);
        let empty = list(ApiShape::Anthropic, &[]);
        assert_eq!(empty["first_id"], Value::Null);
    }
}
