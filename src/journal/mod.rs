//! The `journal` module (being written).
