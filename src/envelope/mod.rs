//! The `envelope` module (being written).
