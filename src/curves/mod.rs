//! The pictures of a cleared batch (the explorer's, `sealbatch plot`'s): each cleared market's aggregate demand
//! and supply step curves, with the uniform price and the volume marked,
//! computed from what a batch publishes (its envelopes, opened with the
//! released `s_e`, and its result) and drawn as SVG.
//!
//! # Layout
//!
//! - [`steps`]: `D(p)` and `S(p)` at every candidate price
//!   (`spec/clearing.md` §3), the published price, volume and imbalance,
//!   and how the orders filled.
//! - [`svg`]: the curves as a self-contained SVG document, and a market's
//!   price and volume over recent batches.
//!
//! Pure and deterministic, like the rest of the core: the same batch gives
//! the same bytes.

pub mod steps;
pub mod svg;

pub use steps::{Clearing, CurvePoint, FillSummary, MarketCurves, batch_curves};
pub use svg::{HistoryPoint, SvgDoc, batch_svg, escape_markup, market_history_svg};
