//! luxi
