//! http_diagnose
