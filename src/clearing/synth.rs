//! Seeded synthetic order flow, for the demo, the benchmarks and tests.
//!
//! Not part of the clearing rule: nothing here is normative, but it is
//! deterministic, so a seed always gives the same orders.

use super::{MarketInput, MarketParams, OrderColumns, PriceBand};
use crate::order::Order;
use crate::types::{Lots, MarketId, OrderId, Side, Tick};

/// SplitMix64: a tiny, fast, seedable generator (not for secrets).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`0` when `bound` is 0), by multiply-shift.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// The shape of one synthetic market.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// How many orders.
    pub orders: usize,
    /// The market's band.
    pub band: PriceBand,
    /// The reference price limits scatter around.
    pub reference: Tick,
    /// Limits are uniform in `reference ± spread`, clamped into the band.
    pub spread: u64,
    /// Out of 1000 orders, how many are market orders.
    pub market_per_mille: u64,
    /// Quantities are uniform in `1..=qty_max`.
    pub qty_max: Lots,
}

impl Shape {
    /// `orders` orders over a band of `ticks` ticks `[1, ticks]`, limits
    /// uniform over the whole band around its middle, 2% market orders,
    /// quantities 1..=100: the benchmarks' shape.
    #[must_use]
    pub fn uniform(orders: usize, ticks: u64) -> Shape {
        let ticks = ticks.max(1);
        Shape {
            orders,
            band: PriceBand::new(Tick(1), Tick(ticks)),
            reference: Tick(1 + ticks / 2),
            spread: ticks / 2,
            market_per_mille: 20,
            qty_max: 100,
        }
    }
}

/// A market of `shape` whose order ids are `first_id, first_id + 1, …`.
#[must_use]
pub fn market(market: MarketId, shape: &Shape, first_id: u64, seed: u64) -> MarketInput {
    let mut rng = SplitMix64::new(seed ^ (u64::from(market.0) << 32));
    let mut orders = OrderColumns::with_capacity(shape.orders);
    let low = shape.reference.saturating_sub(shape.spread);
    let span = shape.spread.saturating_mul(2).saturating_add(1);
    for i in 0..shape.orders as u64 {
        let bits = rng.next_u64();
        let side = if bits & 1 == 0 { Side::Buy } else { Side::Sell };
        let limit = if (bits >> 1) % 1000 < shape.market_per_mille {
            None
        } else {
            let tick = low.saturating_add(rng.below(span));
            Some(tick.clamp(shape.band.min, shape.band.max))
        };
        let qty = 1 + rng.below(shape.qty_max.max(1));
        orders.push(Order {
            id: OrderId(first_id + i),
            side,
            limit,
            qty,
        });
    }
    MarketInput {
        config: MarketParams {
            market,
            reference: shape.reference.clamp(shape.band.min, shape.band.max),
            band: shape.band,
        },
        orders,
    }
}

/// How a named flow scatters limit prices and market orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// Limits uniform over the whole band, 2% market orders.
    Uniform,
    /// Limits normal around the reference with standard deviation `width`
    /// ticks, 2% market orders.
    Normal {
        /// Standard deviation, in ticks.
        width: u64,
    },
    /// Limits Laplace around the reference with scale `width` ticks (a
    /// sharper peak and fatter tails), 2% market orders.
    Laplace {
        /// Scale, in ticks.
        width: u64,
    },
    /// Limits uniform, and `per_mille` of every 1000 orders market orders.
    MarketHeavy {
        /// Market orders per 1000.
        per_mille: u64,
    },
    /// A thin book over a huge band (10^12 ticks): every limit its own
    /// price level, so discovery sorts instead of using its dense ladder.
    ThinWide,
    /// As the sequencer builds a batch: bundles of 1 to `size` orders, each
    /// order in a market picked at random, ids numbered in bundle
    /// (commitment) order across all markets, so each market's ids rise
    /// with gaps.
    Bundles {
        /// Most orders per bundle.
        size: u64,
    },
}

/// A named, seeded order flow: `bench clearing --shape`. The same flow and
/// order count always give the same batch (on one platform: the normal and
/// Laplace flows use floating-point logarithms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// How prices scatter.
    pub kind: FlowKind,
    /// Markets the orders are spread over (at least 1).
    pub markets: u32,
    /// Ticks in each market's band `[1, ticks]`.
    pub ticks: u64,
    /// The seed.
    pub seed: u64,
}

/// Ticks of the band of [`FlowKind::ThinWide`].
pub const THIN_WIDE_TICKS: u64 = 1_000_000_000_000;

impl Flow {
    /// The benchmarks' default: one market, uniform over 10^4 ticks.
    pub const DEFAULT: Flow = Flow {
        kind: FlowKind::Uniform,
        markets: 1,
        ticks: 10_000,
        seed: 42,
    };

    /// Parses `NAME[:KEY=VALUE,…]`: names `uniform`, `normal`, `laplace`
    /// (key `width`, default 50), `market-heavy` (key `share`, per mille,
    /// default 500), `thin-wide` (default 10^12 ticks), `bundles` (key
    /// `size`, default 8); keys for all: `markets` (default 1), `ticks`
    /// (default 10 000), `seed` (default 42).
    ///
    /// # Errors
    ///
    /// A message naming the unknown name, key or bad value.
    pub fn parse(text: &str) -> Result<Flow, String> {
        let (name, params) = text.split_once(':').unwrap_or((text, ""));
        let mut flow = Flow::DEFAULT;
        let mut width = 50;
        let mut share = 500;
        let mut size = 8;
        for pair in params.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{text:?}: expected KEY=VALUE, got {pair:?}"))?;
            let number = value
                .trim()
                .parse::<u64>()
                .map_err(|error| format!("{text:?}: {key}: {error}"))?;
            match key.trim() {
                "markets" => {
                    flow.markets = u32::try_from(number)
                        .ok()
                        .filter(|&m| (1..=4096).contains(&m))
                        .ok_or_else(|| format!("{text:?}: markets is 1 to 4096"))?;
                }
                "ticks" if number >= 1 => flow.ticks = number,
                "seed" => flow.seed = number,
                "width" if number >= 1 => width = number,
                "share" if number <= 1000 => share = number,
                "size" if (1..=256).contains(&number) => size = number,
                other => return Err(format!("{text:?}: bad key or value {other:?}={number}")),
            }
        }
        flow.kind = match name.trim() {
            "uniform" => FlowKind::Uniform,
            "normal" => FlowKind::Normal { width },
            "laplace" => FlowKind::Laplace { width },
            "market-heavy" => FlowKind::MarketHeavy { per_mille: share },
            "thin-wide" => {
                if !params.contains("ticks=") {
                    flow.ticks = THIN_WIDE_TICKS;
                }
                FlowKind::ThinWide
            }
            "bundles" => FlowKind::Bundles { size },
            other => {
                return Err(format!(
                    "unknown shape {other:?}: uniform, normal, laplace, market-heavy, thin-wide, bundles"
                ));
            }
        };
        Ok(flow)
    }

    /// The flow as `--shape` spells it, with only the keys that differ from
    /// the defaults, e.g. `normal:width=20,markets=4`: parsing it gives the
    /// same flow back.
    #[must_use]
    pub fn describe(&self) -> String {
        let (name, mut keys) = match self.kind {
            FlowKind::Uniform => ("uniform", Vec::new()),
            FlowKind::Normal { width } => ("normal", vec![format!("width={width}")]),
            FlowKind::Laplace { width } => ("laplace", vec![format!("width={width}")]),
            FlowKind::MarketHeavy { per_mille } => {
                ("market-heavy", vec![format!("share={per_mille}")])
            }
            FlowKind::ThinWide => ("thin-wide", Vec::new()),
            FlowKind::Bundles { size } => ("bundles", vec![format!("size={size}")]),
        };
        if self.markets != Flow::DEFAULT.markets {
            keys.push(format!("markets={}", self.markets));
        }
        let default_ticks = if self.kind == FlowKind::ThinWide {
            THIN_WIDE_TICKS
        } else {
            Flow::DEFAULT.ticks
        };
        if self.ticks != default_ticks {
            keys.push(format!("ticks={}", self.ticks));
        }
        if self.seed != Flow::DEFAULT.seed {
            keys.push(format!("seed={}", self.seed));
        }
        if keys.is_empty() {
            name.to_string()
        } else {
            format!("{name}:{}", keys.join(","))
        }
    }

    /// `orders` orders in all (spread evenly over the markets), valid
    /// clearing input: ids strictly rising in each market, limits in the
    /// band, quantities 1..=100.
    #[must_use]
    pub fn generate(&self, orders: usize) -> Vec<MarketInput> {
        let markets = self.markets.max(1);
        let ticks = self.ticks.max(1);
        let band = PriceBand::new(Tick(1), Tick(ticks));
        let reference = 1 + ticks / 2;
        let mut rng = SplitMix64::new(self.seed);
        let mut columns: Vec<OrderColumns> = (0..markets)
            .map(|_| OrderColumns::with_capacity(orders / markets as usize + 1))
            .collect();
        let market_per_mille = match self.kind {
            FlowKind::MarketHeavy { per_mille } => per_mille,
            _ => 20,
        };
        let mut next_market = 0u32;
        let mut left_in_bundle = 0u64;
        for i in 0..orders as u64 {
            let market = match self.kind {
                FlowKind::Bundles { size } => {
                    if left_in_bundle == 0 {
                        left_in_bundle = 1 + rng.below(size);
                    }
                    left_in_bundle -= 1;
                    rng.below(u64::from(markets)) as u32
                }
                _ => {
                    let m = next_market;
                    next_market = (next_market + 1) % markets;
                    m
                }
            };
            let bits = rng.next_u64();
            let side = if bits & 1 == 0 { Side::Buy } else { Side::Sell };
            let limit = if (bits >> 1) % 1000 < market_per_mille {
                None
            } else {
                let offset = match self.kind {
                    FlowKind::Normal { width } => normal(&mut rng) * width as f64,
                    FlowKind::Laplace { width } => laplace(&mut rng) * width as f64,
                    _ => rng.below(ticks) as f64 - (reference - 1) as f64,
                };
                let tick = (reference as f64 + offset.round()).clamp(1.0, ticks as f64);
                Some(Tick(tick as u64).clamp(band.min, band.max))
            };
            let qty = 1 + rng.below(100);
            columns[market as usize].push(Order {
                id: OrderId(i),
                side,
                limit,
                qty,
            });
        }
        columns
            .into_iter()
            .enumerate()
            .map(|(m, orders)| MarketInput {
                config: MarketParams {
                    market: MarketId(m as u32),
                    reference: Tick(reference),
                    band,
                },
                orders,
            })
            .collect()
    }
}

/// A uniform float in `(0, 1)`.
fn unit(rng: &mut SplitMix64) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal deviate (Box–Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let (u, v) = (unit(rng), unit(rng));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A Laplace deviate of scale 1 (inverse CDF).
fn laplace(rng: &mut SplitMix64) -> f64 {
    let u = unit(rng) - 0.5;
    -u.signum() * (1.0 - 2.0 * u.abs()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clearing::clear_batch;

    #[test]
    fn every_flow_is_deterministic_valid_and_spelled_back() {
        for text in [
            "uniform",
            "normal:width=20",
            "laplace:width=5,markets=3,seed=7",
            "market-heavy:share=900",
            "thin-wide",
            "bundles:size=16,markets=8,ticks=500",
        ] {
            let flow = Flow::parse(text).expect("parses");
            assert_eq!(Flow::parse(&flow.describe()), Ok(flow), "{text}");
            let batch = flow.generate(20_000);
            assert_eq!(
                batch,
                flow.generate(20_000),
                "{text}: same seed, same batch"
            );
            let other = Flow {
                seed: flow.seed + 1,
                ..flow
            }
            .generate(20_000);
            assert_ne!(batch, other, "{text}: another seed, another batch");
            assert_eq!(batch.iter().map(|m| m.orders.len()).sum::<usize>(), 20_000);
            assert_eq!(batch.len(), flow.markets as usize);
            for m in &batch {
                m.config.validate().expect("valid market");
                assert!(m.orders.iter().all(|o| {
                    o.qty >= 1
                        && o.limit
                            .is_none_or(|l| (m.config.band.min..=m.config.band.max).contains(&l))
                }));
                assert!(m.orders.ids().windows(2).all(|w| w[0] < w[1]));
            }
            clear_batch(&batch, &[1; 32]).expect("clears");
        }
        let heavy = Flow::parse("market-heavy:share=900")
            .expect("parses")
            .generate(10_000);
        let market = heavy[0].orders.iter().filter(|o| o.limit.is_none()).count();
        assert!((8_500..9_500).contains(&market), "{market} market orders");
        let narrow = Flow::parse("normal:width=5")
            .expect("parses")
            .generate(10_000);
        let near = narrow[0]
            .orders
            .iter()
            .filter(|o| o.limit.is_some_and(|l| l.get().abs_diff(5_001) <= 10))
            .count();
        assert!(near > 9_000, "{near} of 10 000 within two widths");
        assert!(Flow::parse("zigzag").is_err());
        assert!(Flow::parse("uniform:markets=0").is_err());
        assert!(Flow::parse("uniform:colour=3").is_err());
    }
}
