//! Tests of the htools round.
