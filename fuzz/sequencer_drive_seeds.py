"""Seed inputs for fuzz/fuzz_targets/sequencer_drive.rs, and reproductions of
the bugs it found. Each byte is one decision of the target's decoder, in the
order it reads them (`Unstructured::int_in_range` over a range below 256 takes
one byte modulo the range), so a change to the decoder needs a change here.

    cd fuzz && python3 sequencer_drive_seeds.py corpus/sequencer_drive [artifacts/sequencer_drive]
"""
import os, struct, sys

class Seed:
    def __init__(self): self.b = bytearray()
    def byte(self, v): self.b.append(v & 0xff); return self
    def u64(self, v): self.b += struct.pack('<Q', v); return self
    def raw(self, bs): self.b += bytes(bs); return self

# Extreme tables, by index, as in the target.
BAND_MAX = {'1000': 0, 'MAX-1': 1, 'MAX': 2, '1': 3, '2^20-1': 4, 'E18': 5, 'MAX/2': 6, '16': 7}
LOT = {'1': 0, 'E18': 1, 'MAX': 2, 'MAX/16': 3, '10': 4, '2^32': 5}
DEPOSIT = {'MAX': 0, 'MAX/2': 1, 'MAX/8': 2, '1e6': 3, '1': 4, '18E18': 5}

def market(s, base, quote, band_max, band_min=0, tick=0, lot='1', initial=0, fee=1):
    """band_min: 0 one, 1 band_max, 2 half, 3 max-1; tick: 0 one, 1 u64::MAX/band_max,
    2 min(E18, that), 3 half of it; initial: 0 band_min, 1 band_max, 2 mid;
    fee: 0 FEE_BPS_MAX, 1 zero, 2 five."""
    s.byte(base).byte(quote).byte(BAND_MAX[band_max]).byte(band_min).byte(tick)
    s.byte(LOT[lot]).byte(initial).byte(fee)
    s.byte(0)  # next market id: +1

def header(s, markets, traders=2, fee_to_trader=False, batch_len=0, limits=(0,)*6, rng=1, funding=3, orders_per_account=0):
    s.byte(len(markets) - 1)
    s.byte(0)  # first market id 1
    for m in markets:
        market(s, **m)
    s.byte(traders - 2)
    s.byte(0)  # trader seed byte
    s.byte(0 if fee_to_trader else 1)
    s.byte(orders_per_account)  # 0: the default bound, 1: 256
    s.byte(batch_len)  # 0: 100 ms, 1: 1 ms, 2: 1000 ms, 3: 7 ms
    for l in limits:  # announce_ahead, envelopes, bytes, pending receipts, sealed batches, result part: 0 = default
        s.byte(l)
    s.raw([rng] * 8)  # sealing rng seed (u64)
    s.byte(0)  # start at genesis
    s.byte(funding)  # 0: u64::MAX/8 to everyone in every asset, 3: none

def deposit(s, trader, asset_index, amount):
    s.byte(0).byte(trader).byte(asset_index).byte(DEPOSIT[amount])

def withdraw(s, trader, asset_index, how):
    s.byte(2).byte(trader).byte(asset_index).byte(how)

# Order: (market_index or 'unknown', side 'buy'/'sell', limit code, qty code[, qty])
# limit codes: 0 none, 2 band_min, 3 band_max, 4 band_min-1, 5 band_max+1, 6 initial, 8 reference
# qty codes: 0 u64::MAX, 1 one, ('u64', v) exact, 4 affordable / share
def order(s, n_markets, m, side, limit, qty):
    if m == 'unknown':
        s.byte(n_markets * 8)  # the target reads nothing more for it
        return
    s.byte(m * 8).byte(1 if side == 'sell' else 0).byte(limit)
    if isinstance(qty, tuple):
        s.byte(2).u64(qty[1])
    else:
        s.byte(qty)

COUNT = {1: 0, 2: 4, 3: 5, 19: 6, 256: 7}

SHARE = {'count': 0, 1: 1, 2: 2, 4: 3}

def bundle(s, n_markets, trader, orders, batch=0, repeat=False, share=1, tamper=None, ordinary=False):
    """orders: a list of order tuples; with repeat, one tuple repeated `repeat` times.
    Hostile orders: (market, side, limit code, qty code); ordinary ones:
    (market, side, limit code 0 none / 1 reference, qty code 0 affordable / share)."""
    s.byte(7 if tamper is not None else 3)
    s.byte(trader).byte(batch)  # batch: 0 open, 10 open + 1
    s.byte(0 if ordinary else 3)
    count = repeat if repeat else len(orders)
    s.byte(COUNT[count]).byte(SHARE[share])
    s.byte(0 if repeat else 1)  # ratio(1, 2): 0 -> repeated
    for o in (orders[:1] if repeat else orders):
        if ordinary:
            m, side, limit, qty = o
            s.byte(m).byte(1 if side == 'sell' else 0).byte(limit).byte(qty)
        else:
            order(s, n_markets, *o)
    if tamper is not None:
        s.raw(tamper)

def advance(s, ms): s.byte(10).byte(ms >> 8).byte(ms & 0xff)
def pump(s): s.byte(12)
def flush_partly(s, quarter): s.byte(13).byte(quarter)
def restart(s, keep, from_checkpoint=False): s.byte(14).byte(keep + (3 if from_checkpoint else 0))
def checkpoint(s): s.byte(16)
def resubmit(s): s.byte(9)

seeds = {}

# 1. 18-decimal base (lot 10^18): a seller of all of u64::MAX units (18 lots)
#    against a buyer at the initial price.
s = Seed()
header(s, [dict(base=1, quote=0, band_max='1000', lot='E18', initial=2, fee=2)])
deposit(s, 0, 1, 'MAX'); deposit(s, 1, 0, 'MAX/2')
bundle(s, 1, 0, [(0, 'sell', 6, 4)])
bundle(s, 1, 1, [(0, 'buy', 6, 4)], share=4)
advance(s, 300); pump(s)
seeds['fill-lot-1e18'] = s

# 2. Every unit as large as allowed: tick u64::MAX / band_max, lot u64::MAX/16,
#    fee FEE_BPS_MAX; market orders on both sides.
s = Seed()
header(s, [dict(base=1, quote=2, band_max='2^20-1', tick=1, lot='MAX/16', initial=0, fee=0)])
deposit(s, 0, 0, 'MAX/8'); deposit(s, 1, 1, 'MAX')
bundle(s, 1, 0, [(0, 'sell', 0, 4)])
bundle(s, 1, 1, [(0, 'buy', 6, 4)])
advance(s, 300); pump(s)
seeds['fill-huge-tick-max-fee'] = s

# 3. The 19-sell bundle whose funding sum once wrapped: 18 market sells of
#    u64::MAX lots and one of 8240973594166534394 lots at lot 10^18 (it must be
#    rejected UNFUNDED), then an honest sell that trades.
s = Seed()
header(s, [dict(base=1, quote=0, band_max='1000', lot='E18', initial=2, fee=2)])
deposit(s, 0, 1, 'MAX'); deposit(s, 1, 0, 'MAX/2')
poison = [(0, 'sell', 0, 0)] * 18 + [(0, 'sell', 0, ('u64', 8_240_973_594_166_534_394))]
bundle(s, 1, 0, poison)
bundle(s, 1, 0, [(0, 'sell', 6, 4)], share=2)
bundle(s, 1, 1, [(0, 'buy', 6, 4)], share=4)
advance(s, 300); pump(s)
seeds['poison-19-sells'] = s

# 4. The top of the clearing band (band_max = 2^64 - 2, tick 1): limits at the
#    band edges and one beyond; 256 repeated buys.
s = Seed()
header(s, [dict(base=0, quote=1, band_max='MAX-1', band_min=3, initial=1, fee=1)])
deposit(s, 0, 0, 'MAX'); deposit(s, 1, 1, 'MAX')
bundle(s, 1, 0, [(0, 'sell', 2, 4)], share=2)
bundle(s, 1, 1, [(0, 'buy', 3, 1)], repeat=256)
bundle(s, 1, 1, [(0, 'buy', 5, 1)])
bundle(s, 1, 1, [(0, 'buy', 3, 1)])
advance(s, 300); pump(s)
seeds['fill-band-top'] = s

# 5. Two markets sharing assets in both directions, the fee account a trader,
#    one unknown market, a tampered envelope, a partial flush, a crash that
#    loses the writes not durable, a withdrawal and time.
s = Seed()
header(s, [dict(base=1, quote=0, band_max='E18', tick=0, lot='E18', initial=0, fee=0),
           dict(base=0, quote=1, band_max='1000', lot='10', initial=2, fee=2)],
       traders=3, fee_to_trader=True)
deposit(s, 0, 0, 'MAX/2'); deposit(s, 1, 1, 'MAX/2'); deposit(s, 2, 0, 'MAX/8')
bundle(s, 2, 0, [(0, 'buy', 6, 4), (1, 'sell', 6, 4)], share=2)
bundle(s, 2, 1, [(0, 'sell', 0, 4), (1, 'buy', 8, 4)], share=2)
bundle(s, 2, 2, [('unknown', 'buy', 0, 1)])
bundle(s, 2, 2, [(1, 'buy', 6, 1)], tamper=[0, 0, 100, 3])
advance(s, 120); pump(s)
bundle(s, 2, 0, [(1, 'buy', 8, 4)], share=4)
bundle(s, 2, 2, [(1, 'sell', 8, 1)])
flush_partly(s, 2)
bundle(s, 2, 1, [(1, 'sell', 2, 4)], batch=10, share=2)
restart(s, 2)
advance(s, 150); pump(s)
withdraw(s, 0, 0, 2)
resubmit(s)
advance(s, 300); pump(s)
seeds['two-markets-crash'] = s

# 6. Ordinary traders in three extreme markets, everyone funded by the
#    operator: 18-decimal lots, the largest tick with the highest fee, and the
#    top of the clearing band; bundles of 3, 19 and 256 orders, two batches;
#    at most 256 orders per account and batch.
s = Seed()
header(s, [dict(base=1, quote=0, band_max='1000', lot='E18', initial=2, fee=2),
           dict(base=2, quote=0, band_max='2^20-1', tick=1, lot='MAX/16', initial=0, fee=0),
           dict(base=3, quote=0, band_max='MAX-1', band_min=3, initial=1, fee=1)],
       traders=4, funding=0, orders_per_account=1)
bundle(s, 3, 0, [(0, 'sell', 0, 0), (1, 'sell', 1, 0), (2, 'sell', 1, 0)], ordinary=True, share='count')
bundle(s, 3, 3, [(0, 'buy', 1, 0)], repeat=256, ordinary=True, share='count')
bundle(s, 3, 1, [(0, 'buy', 1, 0), (1, 'buy', 0, 0)], ordinary=True, share='count')
bundle(s, 3, 3, [(2, 'buy', 1, 0)], ordinary=True)
bundle(s, 3, 2, [(0, 'buy', 1, 0)], repeat=19, ordinary=True, share='count')
bundle(s, 3, 3, [(1, 'sell', 1, 0)], ordinary=True, share=4)
advance(s, 100); pump(s)
bundle(s, 3, 1, [(0, 'sell', 1, 0), (1, 'sell', 0, 0), (2, 'sell', 1, 0)], ordinary=True, share='count')
bundle(s, 3, 0, [(0, 'buy', 0, 0), (1, 'buy', 1, 0)], ordinary=True, share=4)
advance(s, 100); pump(s)
seeds['ordinary-three-extreme-markets'] = s

# 7. A checkpoint between batches, then a crash and a recovery from it with
#    the journal pruned below its replay_from, in the 18-decimal market.
s = Seed()
header(s, [dict(base=1, quote=0, band_max='1000', lot='E18', initial=2, fee=2),
           dict(base=0, quote=2, band_max='16', tick=1, lot='MAX', initial=2, fee=0)],
       traders=3, funding=0, limits=(0, 0, 0, 0, 0, 1))
bundle(s, 2, 0, [(0, 'sell', 1, 0)], ordinary=True)
bundle(s, 2, 1, [(0, 'buy', 0, 0)], ordinary=True, share=4)
advance(s, 100); pump(s)
bundle(s, 2, 2, [(0, 'sell', 1, 0)], ordinary=True, share=2)
checkpoint(s)
bundle(s, 2, 1, [(0, 'buy', 1, 0)], ordinary=True, share=2)
advance(s, 100); pump(s)
bundle(s, 2, 0, [(1, 'sell', 0, 0)], ordinary=True)
bundle(s, 2, 2, [(1, 'buy', 1, 0)], ordinary=True)
flush_partly(s, 1)
restart(s, 2, from_checkpoint=True)
advance(s, 100); pump(s)
seeds['checkpoint-crash-recover'] = s

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, s in seeds.items():
    with open(os.path.join(out, 'seed-' + name), 'wb') as f:
        f.write(bytes(s.b))
    print(name, len(s.b))

# Reproductions of the bugs found (not seeds).
if len(sys.argv) > 2:
    bugs = {}
    s = Seed()
    header(s, [dict(base=1, quote=0, band_max='MAX', initial=0)], funding=0)
    bundle(s, 1, 0, [(0, 'sell', 0, 0)], ordinary=True)
    advance(s, 300); pump(s)
    bugs['band-max-u64-max-voids-batch'] = s
    s = Seed()
    header(s, [dict(base=1, quote=0, band_max='1000')])
    checkpoint(s)
    bugs['verify-checkpoint-after-genesis-only'] = s
    s = Seed()
    header(s, [dict(base=1, quote=0, band_max='1000')])
    deposit(s, 0, 0, '1'); withdraw(s, 0, 0, 0); pump(s)
    checkpoint(s)
    restart(s, 0, from_checkpoint=True)
    bugs['ledger-eq-zero-total-after-checkpoint'] = s
    os.makedirs(sys.argv[2], exist_ok=True)
    for name, s in bugs.items():
        with open(os.path.join(sys.argv[2], 'crash-' + name), 'wb') as f:
            f.write(bytes(s.b))
        print(name, len(s.b), bytes(s.b).hex())
