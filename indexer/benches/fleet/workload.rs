//! The seed's fleet as index events, at any number of engines: the one workload the index
//! benches (`--bench route`, `bench/index-compare`) share, so every index sees the same
//! events and the same queries.
//!
//! The seed: 150 groups per 8 engines, each a 6,000-token system prompt shared by its 5
//! users, each user a 1,200-token question and 1,000 output tokens, 64-token blocks. So a
//! request is 112 keys (a 94-block shared prefix, 18 of its own), and each user's cached
//! path adds 15 blocks of output. Each group lives on one engine (`g % engines`); every
//! fourth group also on the next engine (prefix and its first user: a spill of a hot
//! prefix). Every engine's cache holds exactly the seed pod's 4,802 blocks (307,328
//! tokens): its groups in order until full. Events are the engines' `BlockStored`s, one
//! 2,048-token prefill chunk (32 blocks) each, in chain order.

#![allow(dead_code)]

pub const BLOCKS_PER_ENGINE: usize = 4_802;
pub const PREFIX_BLOCKS: usize = 94;
pub const QUESTION_BLOCKS: usize = 18;
pub const OUTPUT_BLOCKS: usize = 15;
pub const USERS: usize = 5;
pub const GROUPS_PER_8_ENGINES: usize = 150;
pub const EVENT_BLOCKS: usize = 32;
pub const REQUEST_KEYS: usize = PREFIX_BLOCKS + QUESTION_BLOCKS;

/// One `BlockStored`: parent key, keys.
pub type Event = (Option<u64>, Vec<u64>);

/// Blocks each engine holds from a request's first key: (engine, run), sorted.
pub type Answer = Vec<(usize, usize)>;

/// One deterministic fleet.
pub struct Fleet {
    pub engines: usize,
    /// Per engine, its stored events oldest first: the parent block's key (none at the
    /// root) and the keys in chain order.
    pub events: Vec<Vec<Event>>,
    /// 112-key requests whose first block some engine holds, with the blocks each engine
    /// holds from the start (engine, run), the answer every index must give.
    pub hits: Vec<(Vec<u64>, Answer)>,
    /// 112-key requests nobody holds.
    pub misses: Vec<Vec<u64>>,
}

impl Fleet {
    pub fn entries(&self) -> usize {
        self.events.iter().flatten().map(|(_, k)| k.len()).sum()
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key(group: usize, user: usize, block: usize) -> u64 {
    mix(((group as u64) << 24) ^ ((user as u64) << 16) ^ block as u64)
}

/// The prefix's keys, then a user's question and output keys.
fn path(group: usize, user: usize) -> Vec<u64> {
    let mut keys: Vec<u64> = (0..PREFIX_BLOCKS).map(|b| key(group, 0xff, b)).collect();
    keys.extend((0..QUESTION_BLOCKS + OUTPUT_BLOCKS).map(|b| key(group, user, b)));
    keys
}

pub fn fleet(engines: usize, queries: usize) -> Fleet {
    let groups = GROUPS_PER_8_ENGINES * engines / 8;
    // (group, users) an engine caches, in group order.
    let mut placed: Vec<Vec<(usize, usize)>> = vec![Vec::new(); engines];
    for g in 0..groups {
        placed[g % engines].push((g, USERS));
        if g % 4 == 0 && engines > 1 {
            placed[(g + 1) % engines].push((g, 1));
        }
    }
    let mut events = Vec::with_capacity(engines);
    // held[(group, user)] = engines holding that user's whole path, and the prefix alone.
    let mut held: std::collections::HashMap<(usize, usize), Vec<(usize, usize)>> =
        std::collections::HashMap::new();
    for (e, list) in placed.iter_mut().enumerate() {
        list.sort();
        let mut room = BLOCKS_PER_ENGINE;
        let mut mine: Vec<Event> = Vec::new();
        'groups: for &(g, users) in list.iter() {
            let mut prefix_run = 0;
            for u in 0..users {
                let p = path(g, u);
                // The prefix is stored with the first user; the others add their own part.
                let part = if u == 0 { &p[..] } else { &p[PREFIX_BLOCKS..] };
                let take = part.len().min(room);
                if take == 0 {
                    // Full: users not cached here still find the prefix (if it fit).
                    if u > 0 {
                        for other in u..users {
                            held.entry((g, other)).or_default().push((e, prefix_run));
                        }
                    }
                    break 'groups;
                }
                let start = p.len() - part.len();
                for (i, chunk) in part[..take].chunks(EVENT_BLOCKS).enumerate() {
                    let at = start + i * EVENT_BLOCKS;
                    mine.push(((at > 0).then(|| p[at - 1]), chunk.to_vec()));
                }
                room -= take;
                // Blocks of this user's request the engine holds from the start.
                if u == 0 {
                    prefix_run = take.min(PREFIX_BLOCKS);
                }
                let run = if u == 0 { take } else { PREFIX_BLOCKS + take };
                held.entry((g, u))
                    .or_default()
                    .push((e, run.min(REQUEST_KEYS)));
                // Users beyond those placed still share the prefix.
                if u == 0 {
                    for other in users..USERS {
                        held.entry((g, other))
                            .or_default()
                            .push((e, take.min(PREFIX_BLOCKS)));
                    }
                }
            }
        }
        events.push(mine);
    }
    let mut state = engines as u64;
    let mut hits = Vec::with_capacity(queries);
    while hits.len() < queries {
        state = mix(state);
        let (g, u) = (
            (state % groups as u64) as usize,
            (state >> 32) as usize % USERS,
        );
        if let Some(h) = held.get(&(g, u)) {
            let mut want = h.clone();
            want.sort();
            hits.push((path(g, u)[..REQUEST_KEYS].to_vec(), want));
        }
    }
    let misses = (0..queries)
        .map(|q| {
            (0..REQUEST_KEYS)
                .map(|b| key(usize::MAX >> 8, q, b))
                .collect()
        })
        .collect();
    Fleet {
        engines,
        events,
        hits,
        misses,
    }
}
