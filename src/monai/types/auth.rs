//! Login: `POST /api/v1/login` `{"ngc_api_key": KEY}` → `{"user_id", "token"}`.

use serde::{Deserialize, Serialize};

use super::Extra;
use crate::util::Secret;

/// `{"ngc_api_key": KEY}`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    #[serde(with = "super::secret")]
    pub ngc_api_key: Secret,
}

/// `{"user_id": "...", "token": "..."}` (the guide asserts both; only the token is needed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginAnswer {
    #[serde(with = "super::secret")]
    pub token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}
