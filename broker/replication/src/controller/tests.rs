//! Controller unit tests.
