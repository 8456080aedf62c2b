//! Checkpoints: bit-exact safetensors round trips, strict module loading,
//! atomic saves, and hostile files that must give errors, never panics.

mod common;

use std::path::PathBuf;

use amp::checkpoint::{StateDict, load_module, save_module};
use amp::nn::{Module, Parameter, join};
use amp::{BF16, Error, F16, F32, Precision, Shape, Tensor};
use common::{Rng, repro, seed};
use half::{bf16, f16};

// ---- helpers -------------------------------------------------------------------

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let s = seed();
        let dir =
            std::env::temp_dir().join(format!("amp-ckpt-test-{what}-{}-{s}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Every name in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Random bits, with the special patterns (±0, ±inf, NaNs with payloads,
/// smallest and largest subnormals, max finite) forced into the first slots.
fn f32_bits(rng: &mut Rng, n: usize) -> Vec<f32> {
    let special: [u32; 10] = [
        0x0000_0000,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001, // signalling NaN
        0xffff_ffff,
        0x0000_0001, // smallest subnormal
        0x807f_ffff, // largest negative subnormal
        0x7f7f_ffff,
    ];
    (0..n)
        .map(|i| f32::from_bits(special.get(i).copied().unwrap_or(rng.next_u64() as u32)))
        .collect()
}

fn u16_bits(rng: &mut Rng, n: usize, special: &[u16]) -> Vec<u16> {
    (0..n)
        .map(|i| special.get(i).copied().unwrap_or(rng.next_u64() as u16))
        .collect()
}

const F16_SPECIAL: [u16; 9] = [
    0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x0001, 0x83ff, 0x7bff,
];
const BF16_SPECIAL: [u16; 9] = [
    0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0x0001, 0x807f, 0x7f7f,
];

fn random_dims(rng: &mut Rng) -> Vec<usize> {
    let rank = rng.below(4);
    (0..rank).map(|_| 1 + rng.below(5)).collect()
}

fn bits_f32(t: &Tensor<F32>) -> Vec<u32> {
    t.to_vec().iter().map(|x| x.to_bits()).collect()
}

fn bits_f16(t: &Tensor<F16>) -> Vec<u16> {
    t.to_vec().iter().map(|x| x.to_bits()).collect()
}

fn bits_bf16(t: &Tensor<BF16>) -> Vec<u16> {
    t.to_vec().iter().map(|x| x.to_bits()).collect()
}

/// The bytes of a safetensors file with this JSON header (padded as
/// safetensors pads) and data.
fn st_file(header: &str, data: &[u8]) -> Vec<u8> {
    st_file_bytes(header.as_bytes(), data)
}

fn st_file_bytes(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = header.to_vec();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Loading `bytes` from a file must fail with a message that names the file
/// and contains every one of `needles`.
fn expect_load_err(dir: &TempDir, what: &str, bytes: &[u8], needles: &[&str]) -> String {
    let path = dir.file(&format!("{what}.safetensors"));
    std::fs::write(&path, bytes).unwrap();
    let err = match StateDict::load(&path) {
        Ok(s) => panic!(
            "{what}: a hostile file loaded ({} tensors) instead of failing",
            s.len()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Checkpoint { .. }),
        "{what}: expected Error::Checkpoint, got {err:?}"
    );
    assert!(
        msg.contains(&path.display().to_string()),
        "{what}: the message does not name the file: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "{what}: the message lacks `{n}`: {msg}");
    }
    // The same bytes in memory fail the same way.
    assert!(
        StateDict::from_bytes(bytes).is_err(),
        "{what}: from_bytes accepted it"
    );
    msg
}

// ---- round trips -----------------------------------------------------------------

#[test]
fn tensors_and_metadata_round_trip_bit_exactly() {
    let s = seed();
    let mut rng = Rng::new(s);
    let dir = TempDir::new("roundtrip");
    let path = dir.file("state.safetensors");

    let mut state = StateDict::new();
    let mut f32s = Vec::new();
    let mut f16s = Vec::new();
    let mut bf16s = Vec::new();
    for i in 0..4 {
        // The first tensor of each kind is big enough for every special value.
        let dims = if i == 0 {
            vec![3, 5]
        } else {
            random_dims(&mut rng)
        };
        let n: usize = dims.iter().product();
        let a = Tensor::<F32>::from_vec(f32_bits(&mut rng, n), dims.clone()).unwrap();
        let b = Tensor::<F16>::from_vec(
            u16_bits(&mut rng, n, &F16_SPECIAL)
                .into_iter()
                .map(f16::from_bits)
                .collect(),
            dims.clone(),
        )
        .unwrap();
        let c = Tensor::<BF16>::from_vec(
            u16_bits(&mut rng, n, &BF16_SPECIAL)
                .into_iter()
                .map(bf16::from_bits)
                .collect(),
            dims.clone(),
        )
        .unwrap();
        state.insert(format!("f32.{i}"), &a);
        state.insert(format!("f16.{i}"), &b);
        state.insert(format!("bf16.{i}"), &c);
        f32s.push(a);
        f16s.push(b);
        bf16s.push(c);
    }
    // An empty tensor, and a transposed (strided) view, which is saved as its
    // row-major values.
    let empty = Tensor::<F32>::zeros([0, 3]);
    state.insert("empty", &empty);
    let m = Tensor::<F16>::randn([3, 4], s);
    let mt = m.t().unwrap();
    state.insert("transposed", &mt);

    let metadata = [
        ("step", format!("{}", rng.next_u64())),
        ("loss_scale", "65536".to_string()),
        (
            "quotes \"and\" \\backslashes\\",
            "line\nbreak\ttab \u{1F600} ünïcode".to_string(),
        ),
        ("empty", String::new()),
    ];
    for (k, v) in &metadata {
        state.insert_meta(*k, v.clone());
    }

    state.save(&path).unwrap();
    let back = StateDict::load(&path).unwrap();
    let ctx = repro(s);

    assert_eq!(
        back.names().collect::<Vec<_>>(),
        state.names().collect::<Vec<_>>(),
        "{ctx}"
    );
    for i in 0..4 {
        let a = back
            .get::<F32>(&format!("f32.{i}"), f32s[i].shape())
            .unwrap();
        assert_eq!(bits_f32(&a), bits_f32(&f32s[i]), "f32.{i}, {ctx}");
        let b = back
            .get::<F16>(&format!("f16.{i}"), f16s[i].shape())
            .unwrap();
        assert_eq!(bits_f16(&b), bits_f16(&f16s[i]), "f16.{i}, {ctx}");
        let c = back
            .get::<BF16>(&format!("bf16.{i}"), bf16s[i].shape())
            .unwrap();
        assert_eq!(bits_bf16(&c), bits_bf16(&bf16s[i]), "bf16.{i}, {ctx}");
    }
    assert_eq!(back.get::<F32>("empty", empty.shape()).unwrap().numel(), 0);
    let t = back.get::<F16>("transposed", &Shape::from([4, 3])).unwrap();
    assert_eq!(bits_f16(&t), bits_f16(&mt.contiguous()), "{ctx}");
    assert!(t.is_contiguous());

    let mut keys: Vec<&str> = metadata.iter().map(|(k, _)| *k).collect();
    keys.sort();
    assert_eq!(back.meta_keys().collect::<Vec<_>>(), keys, "{ctx}");
    for (k, v) in &metadata {
        assert_eq!(back.meta(k).unwrap(), v, "metadata `{k}`, {ctx}");
    }
    assert_eq!(back.meta_parse::<f32>("loss_scale").unwrap(), 65536.0);

    // The file is exactly what to_bytes gives, and reads back the same.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, state.to_bytes().unwrap(), "{ctx}");
    let mem = StateDict::from_bytes(&bytes).unwrap();
    assert_eq!(mem.len(), state.len());

    // A file with no metadata and no tensors is valid too.
    let blank = StateDict::new();
    blank.save(&path).unwrap();
    let back = StateDict::load(&path).unwrap();
    assert!(back.is_empty() && back.meta_keys().next().is_none());
}

#[test]
fn files_are_plain_safetensors() {
    // Read by an independent JSON parser: the layout other frameworks expect.
    let mut state = StateDict::new();
    state.insert("b", &Tensor::<BF16>::ones([2]));
    state.insert(
        "a",
        &Tensor::<F32>::from_f32(&[1.5, -2.0, 0.25], [3, 1]).unwrap(),
    );
    state.insert_meta("format", "pt");
    let bytes = state.to_bytes().unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "the header is padded to 8 bytes");
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["format"], "pt");
    assert_eq!(header["a"]["dtype"], "F32");
    assert_eq!(header["a"]["shape"], serde_json::json!([3, 1]));
    assert_eq!(header["b"]["dtype"], "BF16");
    let (s, e) = (
        header["a"]["data_offsets"][0].as_u64().unwrap() as usize,
        header["a"]["data_offsets"][1].as_u64().unwrap() as usize,
    );
    let data = &bytes[8 + n..];
    let a: Vec<f32> = data[s..e]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(a, [1.5, -2.0, 0.25]);
}

// ---- modules -------------------------------------------------------------------

struct Linear<P: Precision> {
    weight: Parameter<P>,
    bias: Parameter<P>,
}

impl<P: Precision> Linear<P> {
    fn new(out: usize, inp: usize, seed: u64) -> Self {
        Linear {
            weight: Parameter::new(Tensor::<F32>::randn([out, inp], seed).cast()),
            bias: Parameter::new(Tensor::<F32>::randn([out], seed + 1).cast()),
        }
    }
}

impl<P: Precision> Module<P> for Linear<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        f(&join(prefix, "weight"), &self.weight);
        f(&join(prefix, "bias"), &self.bias);
    }
}

struct Mlp<P: Precision> {
    fc1: Linear<P>,
    fc2: Linear<P>,
}

impl<P: Precision> Mlp<P> {
    fn new(hidden: usize, seed: u64) -> Self {
        Mlp {
            fc1: Linear::new(hidden, 4, seed),
            fc2: Linear::new(2, hidden, seed + 10),
        }
    }
}

impl<P: Precision> Module<P> for Mlp<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        self.fc1.visit(&join(prefix, "fc1"), f);
        self.fc2.visit(&join(prefix, "fc2"), f);
    }
}

fn values<P: Precision>(m: &impl Module<P>) -> Vec<Vec<f32>> {
    m.parameters()
        .iter()
        .map(|p| p.value().to_f32_vec())
        .collect()
}

#[test]
fn module_round_trip() {
    let s = seed();
    let ctx = repro(s);
    let dir = TempDir::new("module");

    // Whole-file helpers, F16 parameters.
    let path = dir.file("mlp.safetensors");
    let trained = Mlp::<F16>::new(8, s);
    save_module(&trained, &path).unwrap();
    let names: Vec<String> = StateDict::load(&path)
        .unwrap()
        .names()
        .map(String::from)
        .collect();
    assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    let fresh = Mlp::<F16>::new(8, s + 100);
    assert_ne!(values(&fresh), values(&trained), "{ctx}");
    load_module(&fresh, &path).unwrap();
    assert_eq!(values(&fresh), values(&trained), "{ctx}");

    // A model and other state (as an optimizer writes it) under prefixes in
    // one file: each prefix loads strictly, ignoring the other.
    let model = Mlp::<BF16>::new(6, s + 200);
    let mut state = StateDict::new();
    state.insert_module("model", &model);
    state.insert("optim.fc1.weight.m", &Tensor::<F32>::zeros([6, 4]));
    state.insert_meta("optim.step", "3");
    let path = dir.file("train.safetensors");
    state.save(&path).unwrap();
    let back = StateDict::load(&path).unwrap();
    let fresh = Mlp::<BF16>::new(6, s + 300);
    back.load_module("model", &fresh).unwrap();
    assert_eq!(values(&fresh), values(&model), "{ctx}");
    // The loaded parameters are plain values: training can go on from them.
    let loss = fresh.fc1.weight.tensor().cast::<F32>().sqr().sum();
    let grads = loss.backward().unwrap();
    assert!(grads.get(&fresh.fc1.weight).is_some());
}

#[test]
fn strict_module_loading_changes_nothing_on_error() {
    let s = seed();
    let ctx = repro(s);
    let saved = Mlp::<F32>::new(8, s);
    let mut good = StateDict::new();
    good.insert_module("m", &saved);

    let check = |what: &str, state: &StateDict, needles: &[&str]| {
        let target = Mlp::<F32>::new(8, s + 1);
        let before = values(&target);
        let err = state.load_module("m", &target).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Checkpoint { .. }), "{what}: {err:?}");
        for n in needles {
            assert!(msg.contains(n), "{what}: the message lacks `{n}`: {msg}");
        }
        assert!(msg.contains("nothing was loaded"), "{what}: {msg}");
        assert_eq!(
            values(&target),
            before,
            "{what}: a failed load changed the module, {ctx}"
        );
    };

    // A tensor missing: the others (which would fit) are not loaded either.
    let mut missing = StateDict::new();
    for name in good.names().filter(|n| *n != "m.fc2.bias") {
        missing.insert(
            name,
            &good.get::<F32>(name, saved_shape(&saved, name)).unwrap(),
        );
    }
    check("missing", &missing, &["missing", "`m.fc2.bias`"]);

    // The wrong shape (from a wider model).
    let mut wide = StateDict::new();
    wide.insert_module("m", &Mlp::<F32>::new(9, s));
    check("shape", &wide, &["`m.fc1.weight`", "[9, 4]", "[8, 4]"]);

    // The wrong precision.
    let mut half = StateDict::new();
    half.insert_module("m", &Mlp::<F16>::new(8, s));
    check("precision", &half, &["`m.fc1.weight`", "F16", "F32"]);

    // An extra tensor under the prefix (strict), while one outside it is fine.
    let mut extra = good.clone();
    extra.insert("m.fc3.weight", &Tensor::<F32>::zeros([2]));
    check("extra", &extra, &["unexpected", "`m.fc3.weight`"]);
    let mut outside = good.clone();
    outside.insert("other.w", &Tensor::<F32>::zeros([2]));
    let target = Mlp::<F32>::new(8, s + 2);
    outside.load_module("m", &target).unwrap();
    assert_eq!(values(&target), values(&saved), "{ctx}");
    // With no prefix, every tensor in the file must belong to the module.
    let target = Mlp::<F32>::new(8, s + 3);
    let err = outside.load_module("", &target).unwrap_err().to_string();
    assert!(err.contains("prefix"), "{err}");

    // A wrong prefix says so.
    let err = good.load_module("model", &target).unwrap_err().to_string();
    assert!(err.contains("is the prefix right"), "{err}");

    // Loaded from a file, the error names the file.
    let dir = TempDir::new("strict");
    let path = dir.file("half.safetensors");
    half.save(&path).unwrap();
    let err = StateDict::load(&path)
        .unwrap()
        .load_module("m", &target)
        .unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    let err = load_module(&target, &path).unwrap_err().to_string();
    assert!(
        err.contains("unexpected") || err.contains("missing"),
        "{err}"
    );
}

fn saved_shape<'a>(m: &'a Mlp<F32>, name: &str) -> &'a Shape {
    match name {
        "m.fc1.weight" => m.fc1.weight.shape(),
        "m.fc1.bias" => m.fc1.bias.shape(),
        "m.fc2.weight" => m.fc2.weight.shape(),
        _ => m.fc2.bias.shape(),
    }
}

// ---- atomic saves ----------------------------------------------------------------

#[test]
fn failed_saves_leave_the_old_file_and_no_temporary_files() {
    let dir = TempDir::new("atomic");
    let path = dir.file("ckpt.safetensors");
    let mut old = StateDict::new();
    old.insert("w", &Tensor::<F32>::ones([4]));
    old.save(&path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();

    let mut new = StateDict::new();
    new.insert("w", &Tensor::<F32>::zeros([4]));
    new.insert("v", &Tensor::<F16>::ones([2]));

    // Into a directory that does not exist.
    let missing_dir = dir.file("no-such-dir").join("ckpt.safetensors");
    let err = new.save(&missing_dir).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-dir"), "{err}");

    // Over a directory: the data is written to a temporary file, then the
    // rename fails; the temporary file must go.
    let blocker = dir.file("blocker.safetensors");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("inside"), b"keep").unwrap();
    let err = new.save(&blocker).unwrap_err();
    assert!(err.to_string().contains("blocker.safetensors"), "{err}");
    assert_eq!(std::fs::read(blocker.join("inside")).unwrap(), b"keep");

    // A name safetensors reserves: refused before anything is written.
    let mut reserved = new.clone();
    reserved.insert("__metadata__", &Tensor::<F32>::ones([1]));
    let err = reserved.save(&path).unwrap_err().to_string();
    assert!(err.contains("__metadata__"), "{err}");

    // A path with no file name.
    assert!(new.save(dir.0.join("..")).is_err());

    // A read-only directory (meaningless as root, who may write anyway).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.file("ro");
        std::fs::create_dir(&ro).unwrap();
        let ro_file = ro.join("ckpt.safetensors");
        old.save(&ro_file).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let writable = std::fs::write(ro.join("probe"), b"").is_ok();
        if !writable {
            let err = new.save(&ro_file).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Io {
                        kind: std::io::ErrorKind::PermissionDenied,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_eq!(std::fs::read(&ro_file).unwrap(), old_bytes);
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut listing: Vec<_> = std::fs::read_dir(&ro)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "probe")
            .collect();
        listing.sort();
        assert_eq!(listing, ["ckpt.safetensors"]);
    }

    // The old checkpoint is untouched, and nothing else was left behind.
    assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
    let expected: &[&str] = if cfg!(unix) {
        &["blocker.safetensors", "ckpt.safetensors", "ro"]
    } else {
        &["blocker.safetensors", "ckpt.safetensors"]
    };
    assert_eq!(dir.listing(), expected);

    // A successful save replaces it, again leaving no temporary file.
    new.save(&path).unwrap();
    let back = StateDict::load(&path).unwrap();
    assert_eq!(
        back.get::<F32>("w", &Shape::from([4])).unwrap().to_vec(),
        vec![0.0; 4]
    );
    assert_eq!(dir.listing(), expected);

    // A relative path in the current directory works too (parent is "").
    let rel = format!("amp-ckpt-rel-{}-{}.safetensors", std::process::id(), seed());
    new.save(&rel).unwrap();
    let back = StateDict::load(&rel);
    std::fs::remove_file(&rel).unwrap();
    assert_eq!(back.unwrap().len(), 2);
}

// ---- hostile files ---------------------------------------------------------------

fn valid_state(seed: u64) -> StateDict {
    let mut s = StateDict::new();
    s.insert("a", &Tensor::<F32>::randn([3, 4], seed));
    s.insert("b", &Tensor::<F16>::randn([5], seed + 1));
    s.insert("c", &Tensor::<BF16>::randn([2, 3], seed + 2));
    s.insert_meta("step", "42");
    s
}

#[test]
fn hostile_files_give_errors_naming_the_file() {
    let s = seed();
    let dir = TempDir::new("hostile");
    let valid = valid_state(s).to_bytes().unwrap();
    let n = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;

    // Missing, and a directory where a file should be.
    let err = StateDict::load(dir.file("missing.safetensors")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    assert!(StateDict::load(&dir.0).is_err());

    expect_load_err(&dir, "empty", b"", &["0 bytes", "empty or truncated"]);

    // Truncated inside the length field, inside the header, right after it,
    // inside the data, and one byte short.
    for cut in [3, 8, 8 + n / 2, 8 + n, 8 + n + 5, valid.len() - 1] {
        expect_load_err(
            &dir,
            &format!("truncated-{cut}"),
            &valid[..cut],
            &["truncated"],
        );
    }
    // Bytes appended.
    let mut longer = valid.clone();
    longer.extend_from_slice(&[0; 4]);
    expect_load_err(&dir, "appended", &longer, &["extra bytes"]);

    // Header length past the end, and absurdly large.
    let mut past = valid.clone();
    past[..8].copy_from_slice(&(valid.len() as u64).to_le_bytes());
    expect_load_err(
        &dir,
        "length-past-end",
        &past,
        &["header length", "truncated"],
    );
    let mut huge = valid.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_load_err(&dir, "length-huge", &huge, &["header length", "limit"]);

    // Not JSON, not UTF-8, not an object.
    expect_load_err(
        &dir,
        "json",
        &st_file("{\"a\": {\"dtype\": ", &[]),
        &["JSON"],
    );
    expect_load_err(
        &dir,
        "utf8",
        &st_file_bytes(b"{\"\xff\":1}", &[]),
        &["UTF-8"],
    );
    expect_load_err(&dir, "array", &st_file("[1, 2]", &[]), &["JSON"]);
    expect_load_err(
        &dir,
        "unknown-dtype",
        &st_file(
            r#"{"x":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#,
            &[0],
        ),
        &["JSON"],
    );

    // Dtypes amp does not hold.
    let msg = expect_load_err(
        &dir,
        "i64",
        &st_file(
            r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
            &[0; 16],
        ),
        &["`ids`", "I64", "F32, F16 and BF16"],
    );
    assert!(!msg.contains("panic"), "{msg}");
    expect_load_err(
        &dir,
        "f64",
        &st_file(
            r#"{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
        &["F64", "F32, F16 and BF16"],
    );

    // Shapes: numel overflowing, and data length ≠ numel × dtype size.
    let big = 1u64 << 40;
    expect_load_err(
        &dir,
        "numel-overflow",
        &st_file(
            &format!(r#"{{"x":{{"dtype":"F32","shape":[{big},{big}],"data_offsets":[0,8]}}}}"#),
            &[0; 8],
        ),
        &["shape", "corrupt"],
    );
    expect_load_err(
        &dir,
        "dim-absurd",
        &st_file(
            &format!(
                r#"{{"x":{{"dtype":"F32","shape":[0,{}],"data_offsets":[0,0]}}}}"#,
                u64::MAX
            ),
            &[],
        ),
        &["absurd"],
    );
    expect_load_err(
        &dir,
        "size-mismatch",
        &st_file(
            r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
        &["shape × dtype size"],
    );

    // Offsets: past the data, overlapping, reversed, with a gap, duplicated names.
    expect_load_err(
        &dir,
        "offsets-out-of-range",
        &st_file(
            r#"{"x":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}}"#,
            &[0; 8],
        ),
        &["truncated"],
    );
    expect_load_err(
        &dir,
        "offsets-overlap",
        &st_file(
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
        &["offsets"],
    );
    expect_load_err(
        &dir,
        "offsets-reversed",
        &st_file(
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            &[0; 8],
        ),
        &["offsets"],
    );
    expect_load_err(
        &dir,
        "offsets-gap",
        &st_file(
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            &[0; 8],
        ),
        &["offsets"],
    );
    expect_load_err(
        &dir,
        "duplicate-name",
        &st_file(
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            &[0; 8],
        ),
        &[],
    );
    // Offsets whose sum would overflow safetensors' size arithmetic.
    // Eight tensors of 2^61 bytes each: every one valid on its own, their
    // sum just below 2^64.
    let size = u64::MAX / 8 / 4 * 4;
    let mut header = String::from("{");
    for i in 0..8u64 {
        let (a, b) = (i * size, (i + 1) * size);
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""t{i}":{{"dtype":"F32","shape":[{}],"data_offsets":[{a},{b}]}}"#,
            size / 4
        ));
    }
    header.push('}');
    expect_load_err(
        &dir,
        "offsets-overflow",
        &st_file(&header, &[]),
        &["absurd"],
    );

    // Metadata that is not strings.
    expect_load_err(
        &dir,
        "meta-not-strings",
        &st_file(r#"{"__metadata__":{"step":3}}"#, &[]),
        &["JSON"],
    );

    // A tensor missing, or of the wrong shape or precision, at `get`.
    let good = StateDict::from_bytes(&valid).unwrap();
    let err = good
        .get::<F32>("nope", &Shape::from([3, 4]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nope`"), "{err}");
    let err = good
        .get::<F32>("a", &Shape::from([4, 3]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[4, 3]") && err.contains("[3, 4]"), "{err}");
    let err = good
        .get::<F16>("a", &Shape::from([3, 4]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("F32") && err.contains("F16"), "{err}");
    let err = good.meta_parse::<u64>("nope").unwrap_err().to_string();
    assert!(err.contains("`nope`"), "{err}");
}

#[test]
fn corrupted_files_never_panic() {
    let s = seed();
    let ctx = repro(s);
    let mut rng = Rng::new(s);
    let valid = valid_state(s).to_bytes().unwrap();
    let n = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let data_start = 8 + n;
    let reference = StateDict::from_bytes(&valid).unwrap();

    let mut ok = 0;
    for iter in 0..20_000 {
        let mut bytes = valid.clone();
        let mut header_touched = false;
        match rng.below(6) {
            // Random bytes anywhere.
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next_u64() as u8;
                    header_touched |= i < data_start;
                }
            }
            // One bit flipped in the header (length field included).
            1 => {
                let i = rng.below(data_start);
                bytes[i] ^= 1 << rng.below(8);
                header_touched = true;
            }
            // A digit of a shape or offset changed.
            2 => {
                let digits: Vec<usize> = (8..data_start)
                    .filter(|&i| bytes[i].is_ascii_digit())
                    .collect();
                let i = digits[rng.below(digits.len())];
                bytes[i] = b'0' + rng.below(10) as u8;
                header_touched = true;
            }
            // Truncated.
            3 => {
                bytes.truncate(rng.below(bytes.len()));
                header_touched = true;
            }
            // Random bytes inserted.
            4 => {
                let i = rng.below(bytes.len() + 1);
                for _ in 0..1 + rng.below(8) {
                    bytes.insert(i, rng.next_u64() as u8);
                }
                header_touched = true;
            }
            // Data bytes only: any bit pattern is a valid float.
            _ => {
                for _ in 0..1 + rng.below(8) {
                    let i = data_start + rng.below(bytes.len() - data_start);
                    bytes[i] = rng.next_u64() as u8;
                }
            }
        }
        match StateDict::from_bytes(&bytes) {
            Ok(state) => {
                ok += 1;
                if !header_touched {
                    assert!(state.names().eq(reference.names()), "{ctx}");
                    assert!(state.meta_keys().eq(reference.meta_keys()), "{ctx}");
                    let a = state.get::<F32>("a", &Shape::from([3, 4])).unwrap();
                    assert_eq!(a.numel(), 12, "{ctx}");
                }
            }
            Err(e) => {
                assert!(
                    header_touched,
                    "iteration {iter}: changing only tensor data made the file unreadable: {e}, {ctx}"
                );
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(ok > 0, "no mutation ever loaded, {ctx}");
}
