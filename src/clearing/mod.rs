//! The `clearing` module (being written).
