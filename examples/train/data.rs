//! The data the example makes itself: multi-digit addition problems written as
//! characters (the default), or a character-level language model over any
//! text file (`--text FILE`).

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Characters to token ids and back.
#[derive(Clone, Debug)]
pub struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    pub fn new(chars: impl IntoIterator<Item = char>) -> Self {
        let set: BTreeSet<char> = chars.into_iter().collect();
        Vocab {
            chars: set.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn id(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    pub fn char(&self, id: usize) -> char {
        self.chars.get(id).copied().unwrap_or('?')
    }

    pub fn encode(&self, s: &str) -> Vec<usize> {
        s.chars().filter_map(|c| self.id(c)).collect()
    }

    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter().map(|&i| self.char(i)).collect()
    }
}

/// One training batch: `inputs[b][t]` predicts `targets[b][t]`; targets equal
/// to `ignore` carry no loss (the prompt part of an addition problem).
pub struct Batch {
    pub inputs: Vec<usize>,
    pub targets: Vec<usize>,
    pub batch: usize,
    pub len: usize,
}

/// What the model is trained on.
pub enum Task {
    Addition(Addition),
    Text(Text),
}

impl Task {
    pub fn vocab(&self) -> &Vocab {
        match self {
            Task::Addition(a) => &a.vocab,
            Task::Text(t) => &t.vocab,
        }
    }

    /// Sequence length the model sees.
    pub fn context(&self) -> usize {
        match self {
            Task::Addition(a) => a.seq_len() - 1,
            Task::Text(t) => t.context,
        }
    }

    /// A padding/ignore id for the loss.
    pub fn ignore(&self) -> usize {
        self.vocab().len()
    }

    pub fn batch(&self, batch: usize, rng: &mut StdRng) -> Batch {
        match self {
            Task::Addition(a) => a.batch(batch, rng),
            Task::Text(t) => t.batch(batch, rng, self.ignore()),
        }
    }
}

/// `a+b=c` with `digits`-digit operands. Operands are zero-padded so every
/// problem has the same length, and the model writes the sum least
/// significant digit first (the order people add in, carries flowing
/// forward), which a tiny model learns in seconds; answers are shown in the
/// usual order.
pub struct Addition {
    pub digits: usize,
    pub vocab: Vocab,
    /// Held-out problems (never drawn for training).
    pub test: Vec<(u64, u64)>,
}

impl Addition {
    pub fn new(digits: usize, test_size: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xadd);
        let max = 10u64.pow(digits as u32);
        let mut seen = BTreeSet::new();
        let mut test = Vec::new();
        while test.len() < test_size.min((max * max / 2) as usize) {
            let p = (rng.random_range(0..max), rng.random_range(0..max));
            if seen.insert(p) {
                test.push(p);
            }
        }
        Addition {
            digits,
            vocab: Vocab::new("0123456789+=".chars()),
            test,
        }
    }

    fn is_test(&self, p: (u64, u64)) -> bool {
        // The held-out set is small; a linear scan costs nothing next to a step.
        self.test.contains(&p)
    }

    /// Characters of one problem: prompt `a+b=` then the reversed sum.
    pub fn prompt(&self, a: u64, b: u64) -> String {
        let d = self.digits;
        format!("{a:0d$}+{b:0d$}=")
    }

    pub fn answer_reversed(&self, a: u64, b: u64) -> String {
        let d = self.digits + 1;
        format!("{:0d$}", a + b).chars().rev().collect()
    }

    /// Prompt + answer length.
    pub fn seq_len(&self) -> usize {
        (2 * self.digits + 2) + (self.digits + 1)
    }

    pub fn prompt_len(&self) -> usize {
        2 * self.digits + 2
    }

    fn batch(&self, batch: usize, rng: &mut StdRng) -> Batch {
        let max = 10u64.pow(self.digits as u32);
        let len = self.seq_len() - 1;
        let ignore = self.vocab.len();
        let mut inputs = Vec::with_capacity(batch * len);
        let mut targets = Vec::with_capacity(batch * len);
        for _ in 0..batch {
            let (a, b) = loop {
                let p = (rng.random_range(0..max), rng.random_range(0..max));
                if !self.is_test(p) {
                    break p;
                }
            };
            let ids = self
                .vocab
                .encode(&(self.prompt(a, b) + &self.answer_reversed(a, b)));
            inputs.extend_from_slice(&ids[..len]);
            for (t, &id) in ids[1..].iter().enumerate() {
                // Only the answer is predicted: the operands are random.
                targets.push(if t + 1 >= self.prompt_len() {
                    id
                } else {
                    ignore
                });
            }
        }
        Batch {
            inputs,
            targets,
            batch,
            len,
        }
    }
}

/// Character-level language modelling over a text: random windows of
/// `context` characters predicting the next one; the last tenth is held out.
pub struct Text {
    pub vocab: Vocab,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    pub context: usize,
}

impl Text {
    pub fn new(text: &str, context: usize) -> Result<Self, String> {
        let vocab = Vocab::new(text.chars());
        let ids = vocab.encode(text);
        if ids.len() < 10 * (context + 1) {
            return Err(format!(
                "the text has {} characters; character-level training needs at least {} (10 windows of {})",
                ids.len(),
                10 * (context + 1),
                context + 1
            ));
        }
        let split = ids.len() * 9 / 10;
        Ok(Text {
            vocab,
            train: ids[..split].to_vec(),
            test: ids[split..].to_vec(),
            context,
        })
    }

    fn batch(&self, batch: usize, rng: &mut StdRng, _ignore: usize) -> Batch {
        window_batch(&self.train, self.context, batch, rng)
    }

    /// A batch from the held-out tail.
    pub fn test_batch(&self, batch: usize, rng: &mut StdRng) -> Batch {
        window_batch(&self.test, self.context, batch, rng)
    }
}

fn window_batch(ids: &[usize], context: usize, batch: usize, rng: &mut StdRng) -> Batch {
    let mut inputs = Vec::with_capacity(batch * context);
    let mut targets = Vec::with_capacity(batch * context);
    for _ in 0..batch {
        let start = rng.random_range(0..ids.len() - context - 1);
        inputs.extend_from_slice(&ids[start..start + context]);
        targets.extend_from_slice(&ids[start + 1..start + context + 1]);
    }
    Batch {
        inputs,
        targets,
        batch,
        len: context,
    }
}
