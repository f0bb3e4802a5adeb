//! Replica unit tests.
