//! `sealbatch clear FILE`: clear one batch from a CSV file and print JSON.
//!
//! The CSV has the header `id,market,side,price,qty`: `side` is `buy` or
//! `sell`, `price` an integer tick or empty for a market order. Markets are
//! either configured with `--market ID:REFERENCE:MIN:MAX` (then an order for
//! any other market is an error) or taken from the file, with the band of
//! `--band` and the reference price of `--reference-price`, which defaults to
//! the midpoint (rounded down) of the market's lowest and highest limit.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use clap::Args;

use crate::clearing::{self, ClearingError, MarketParams, PriceBand};
use crate::cli::CommandResult;
use crate::order::Order;
use crate::types::{MarketId, OrderId, Side, Tick};

/// Options of `sealbatch clear`.
#[derive(Debug, Args)]
pub struct ClearArgs {
    /// CSV file with header `id,market,side,price,qty` (`-` reads stdin).
    file: PathBuf,
    /// Reference price, in ticks, of the markets not set by `--market`
    /// [default: the midpoint of the market's lowest and highest limit].
    #[arg(long, value_name = "TICKS")]
    reference_price: Option<Tick>,
    /// The 32-byte batch seed that breaks pro-rata ties, as 64 hex digits
    /// [default: all zeros].
    #[arg(long, value_name = "HEX")]
    seed: Option<String>,
    /// Price band of the markets not set by `--market`.
    #[arg(long, value_name = "MIN:MAX", default_value = "1:18446744073709551614", value_parser = parse_band)]
    band: PriceBand,
    /// Configure a market; repeatable. With any `--market`, orders for other
    /// markets are rejected.
    #[arg(long = "market", value_name = "ID:REFERENCE:MIN:MAX", value_parser = parse_market)]
    markets: Vec<MarketParams>,
}

fn parse_band(text: &str) -> Result<PriceBand, String> {
    let (min, max) = text
        .split_once(':')
        .ok_or_else(|| format!("expected MIN:MAX, got {text:?}"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<Tick>()
            .map_err(|error| format!("{s:?}: {error}"))
    };
    Ok(PriceBand::new(number(min)?, number(max)?))
}

fn parse_market(text: &str) -> Result<MarketParams, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [id, reference, min, max] = parts[..] else {
        return Err(format!("expected ID:REFERENCE:MIN:MAX, got {text:?}"));
    };
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|error| format!("{s:?}: {error}"))
    };
    let id = u32::try_from(number(id)?).map_err(|error| format!("market id: {error}"))?;
    Ok(MarketParams {
        market: MarketId(id),
        reference: Tick(number(reference)?),
        band: PriceBand::new(Tick(number(min)?), Tick(number(max)?)),
    })
}

/// The header the CSV must start with.
const CSV_HEADER: &str = "id,market,side,price,qty";

/// One parsed CSV row and the line it came from.
struct Row {
    line: usize,
    market: MarketId,
    order: Order,
}

/// Parses the CSV text; errors name the line.
fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let header = lines.find(|(_, l)| !l.is_empty());
    match header {
        Some((_, header)) if header.replace(' ', "") == CSV_HEADER => {}
        Some((line, header)) => {
            return Err(format!(
                "line {line}: expected header {CSV_HEADER:?}, got {header:?}"
            ));
        }
        None => return Err(format!("empty file: expected header {CSV_HEADER:?}")),
    }
    let mut rows = Vec::new();
    for (line, text) in lines {
        if text.is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        let [id, market, side, price, qty] = fields[..] else {
            return Err(format!(
                "line {line}: expected 5 fields ({CSV_HEADER}), got {}",
                fields.len()
            ));
        };
        let number = |name: &str, s: &str| {
            s.parse::<u64>()
                .map_err(|error| format!("line {line}: bad {name} {s:?}: {error}"))
        };
        let id = OrderId(number("id", id)?);
        let market = MarketId(
            u32::try_from(number("market", market)?)
                .map_err(|_| format!("line {line}: market {market:?} exceeds u32"))?,
        );
        let side = match side.to_ascii_lowercase().as_str() {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            _ => {
                return Err(format!(
                    "line {line}: side must be buy or sell, got {side:?}"
                ));
            }
        };
        let limit = if price.is_empty() {
            None
        } else {
            Some(Tick(number("price", price)?))
        };
        let qty = number("qty", qty)?;
        rows.push(Row {
            line,
            market,
            order: Order {
                id,
                side,
                limit,
                qty,
            },
        });
    }
    Ok(rows)
}

/// The market configurations: the `--market` ones, or one per market of the
/// file with the defaults.
fn configs(args: &ClearArgs, rows: &[Row]) -> Result<Vec<MarketParams>, String> {
    if !args.markets.is_empty() {
        return Ok(args.markets.clone());
    }
    file_configs(rows, args.reference_price, args.band)
}

/// One market per market of the file, with `band` and `reference_price`
/// (default: the midpoint of the market's lowest and highest limit).
fn file_configs(
    rows: &[Row],
    reference_price: Option<Tick>,
    band: PriceBand,
) -> Result<Vec<MarketParams>, String> {
    // market → (lowest limit, highest limit)
    let mut seen: BTreeMap<MarketId, Option<(Tick, Tick)>> = BTreeMap::new();
    for row in rows {
        let entry = seen.entry(row.market).or_insert(None);
        if let Some(limit) = row.order.limit {
            *entry = Some(match *entry {
                Some((low, high)) => (low.min(limit), high.max(limit)),
                None => (limit, limit),
            });
        }
    }
    seen.into_iter()
        .map(|(market, limits)| {
            let reference = match (reference_price, limits) {
                (Some(reference), _) => reference,
                (None, Some((low, high))) => low + (high - low) / 2,
                (None, None) => {
                    return Err(format!(
                        "market {market} has no limit orders: give --reference-price or --market"
                    ));
                }
            };
            Ok(MarketParams {
                market,
                reference,
                band,
            })
        })
        .collect()
}

/// The batch of a `clear` CSV with the command's defaults (the widest
/// band, references at the limits' midpoints): `bench clearing --input`.
///
/// # Errors
///
/// A message naming the line.
pub(crate) fn csv_batch(text: &str) -> Result<Vec<clearing::MarketInput>, String> {
    let rows = parse_csv(text)?;
    let configs = file_configs(&rows, None, PriceBand::FULL)?;
    clearing::canonical_batch(&configs, rows.iter().map(|r| (r.market, r.order)))
        .map_err(|error| with_line(error, &rows))
}

fn parse_seed(text: Option<&str>) -> Result<[u8; 32], String> {
    let Some(text) = text else {
        return Ok([0; 32]);
    };
    let bytes = hex::decode(text.trim()).map_err(|error| format!("--seed: {error}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "--seed: expected 64 hex digits (32 bytes), got {}",
            bytes.len() * 2
        )
    })
}

/// Adds the CSV line to an engine error that names an order.
fn with_line(error: ClearingError, rows: &[Row]) -> String {
    let order = match &error {
        ClearingError::ZeroQuantity { order, .. }
        | ClearingError::LimitOutsideBand { order, .. }
        | ClearingError::DuplicateOrder { order, .. }
        | ClearingError::OrderIdsNotIncreasing { order, .. }
        | ClearingError::UnknownMarket { order, .. } => Some(*order),
        _ => None,
    };
    // For a duplicate, the later line is the one to blame.
    match order.and_then(|id| rows.iter().rev().find(|row| row.order.id == id)) {
        Some(row) => format!("line {}: {error}", row.line),
        None => error.to_string(),
    }
}

#[derive(serde::Serialize)]
struct MarketJson {
    market: MarketId,
    reference: Tick,
    price: Option<Tick>,
    volume: u64,
    imbalance: i128,
    fills: Vec<clearing::Fill>,
}

#[derive(serde::Serialize)]
struct BatchJson {
    seed: String,
    markets: Vec<MarketJson>,
}

pub(super) fn run(args: &ClearArgs) -> CommandResult {
    let path = args.file.display().to_string();
    let mut text = String::new();
    if path == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(&args.file).map_err(|error| format!("{path}: {error}"))?;
    }
    let rows = parse_csv(&text).map_err(|error| format!("{path}: {error}"))?;
    let seed = parse_seed(args.seed.as_deref())?;
    let configs = configs(args, &rows).map_err(|error| format!("{path}: {error}"))?;
    let markets = clearing::canonical_batch(&configs, rows.iter().map(|r| (r.market, r.order)))
        .map_err(|error| format!("{path}: {}", with_line(error, &rows)))?;
    let result = clearing::clear_batch(&markets, &seed)
        .map_err(|error| format!("{path}: {}", with_line(error, &rows)))?;
    let json = BatchJson {
        seed: hex::encode(seed),
        markets: result
            .markets
            .iter()
            .zip(&markets)
            .map(|(m, input)| MarketJson {
                market: m.market,
                reference: input.config.reference,
                price: m.price,
                volume: m.volume,
                imbalance: m.imbalance,
                fills: m.fills().collect(),
            })
            .collect(),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, &json)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
