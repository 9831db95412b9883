//! The PACS adapter's HTTP side (layer 3): one client for DICOMweb and Orthanc's REST API with
//! auth, TLS, size caps and retries ([`client`]), and the URL builder every request goes
//! through ([`endpoint`]): values from outside reach a URL only percent-encoded, never
//! concatenated.

pub mod client;
pub mod endpoint;
