//! Linear layers on Intel AMX: bf16 tiles, f32 accumulation (`tdpbf16ps`).
//!
//! AMX is not in stable Rust's `std::arch`, so the few instructions are inline assembly.
//! Detection is by CPUID (AMX-TILE and AMX-BF16), and Linux must grant the process the
//! tile-data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) before the first tile instruction;
//! when either fails the caller keeps the f32 path.

use std::arch::asm;
use std::arch::x86_64::__cpuid_count;
use std::sync::OnceLock;

use super::bf16::{BLOCK_K as TILE_K, BLOCK_N as TILE, PackedBf16};

/// True when this CPU has AMX-BF16 and the kernel let this process use the tiles.
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let leaf7 = __cpuid_count(7, 0);
        let tile = leaf7.edx & (1 << 24) != 0;
        let bf16 = leaf7.edx & (1 << 22) != 0;
        tile && bf16 && request_tile_permission()
    })
}

fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    #[allow(unsafe_code)]
    // SAFETY: a plain Linux system call; it changes only which register state this process
    // may use, and fails with a negative errno on kernels without AMX support.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Rows of A (and C) one matmul step covers: two 16-row tiles.
pub(super) const ROWS: usize = 2 * TILE;

/// `c[rows, out] = a[rows, in] · wᵀ`, where `a` is bf16 row-major with `rows` a multiple
/// of 32 and `c` is f32 row-major. Must run on a thread after [`available`] said yes.
pub(super) fn matmul(w: &PackedBf16, a: &[u16], rows: usize, c: &mut [f32]) {
    assert!(rows.is_multiple_of(2 * TILE) && a.len() >= rows * w.inp);
    assert!(c.len() >= rows * w.out);
    let cfg = TileConfig::uniform();
    let kb = w.inp / TILE_K;
    let lda = (w.inp * 2) as isize;
    let ldc = (w.out * 4) as isize;
    let ldb: isize = (TILE * 2 * 2) as isize;
    #[allow(unsafe_code)]
    // SAFETY: every tile load and store below stays inside `a`, `w.data` and `c`
    // (16 rows × 64 bytes from a start the loops keep in range, checked by the asserts
    // above); the tile registers are used by no other code on this thread.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.bytes.as_ptr(), options(nostack, readonly));
        for r in (0..rows).step_by(2 * TILE) {
            let a0 = a.as_ptr().add(r * w.inp);
            let a1 = a.as_ptr().add((r + TILE) * w.inp);
            for nb in (0..w.out / TILE).step_by(2) {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                let b0 = w.data.as_ptr().add(nb * kb * TILE * TILE_K);
                let b1 = w.data.as_ptr().add((nb + 1) * kb * TILE * TILE_K);
                for k in 0..kb {
                    asm!(
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {ldb}*1]",
                        "tileloadd tmm7, [{b1} + {ldb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(k * TILE_K),
                        a1 = in(reg) a1.add(k * TILE_K),
                        b0 = in(reg) b0.add(k * TILE * TILE_K),
                        b1 = in(reg) b1.add(k * TILE * TILE_K),
                        lda = in(reg) lda,
                        ldb = in(reg) ldb,
                        options(nostack, readonly)
                    );
                }
                let c00 = c.as_mut_ptr().add(r * w.out + nb * TILE);
                let c01 = c00.add(TILE);
                let c10 = c.as_mut_ptr().add((r + TILE) * w.out + nb * TILE);
                let c11 = c10.add(TILE);
                asm!(
                    "tilestored [{c00} + {ldc}*1], tmm0",
                    "tilestored [{c01} + {ldc}*1], tmm1",
                    "tilestored [{c10} + {ldc}*1], tmm2",
                    "tilestored [{c11} + {ldc}*1], tmm3",
                    c00 = in(reg) c00,
                    c01 = in(reg) c01,
                    c10 = in(reg) c10,
                    c11 = in(reg) c11,
                    ldc = in(reg) ldc,
                    options(nostack)
                );
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

/// Palette 1 with all eight tiles at 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    bytes: [u8; 64],
}

impl TileConfig {
    fn uniform() -> Self {
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        for t in 0..8 {
            let colsb = (TILE_K * 2) as u16;
            bytes[16 + 2 * t..18 + 2 * t].copy_from_slice(&colsb.to_le_bytes());
            bytes[48 + t] = TILE as u8;
        }
        Self { bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::bf16::bf16;

    #[test]
    fn amx_matmul_matches_f32() {
        if !available() {
            eprintln!("SKIPPED amx_matmul_matches_f32: this CPU (or kernel) has no AMX-BF16");
            return;
        }
        let (rows, inp, out) = (64, 96, 64);
        let (w, x) = crate::native::test_operands(rows, out, inp);
        let packed = PackedBf16::pack(&w, out, inp).unwrap();
        let a: Vec<u16> = x.iter().map(|&v| bf16(v)).collect();
        let mut c = vec![0f32; rows * out];
        matmul(&packed, &a, rows, &mut c);
        for r in 0..rows {
            for o in 0..out {
                let want: f32 = (0..inp).map(|k| x[r * inp + k] * w[o * inp + k]).sum();
                // Inputs here are exact in bf16 (few mantissa bits), so only summation order differs.
                assert!(
                    (c[r * out + o] - want).abs() < 1e-3,
                    "{r},{o}: {} vs {want}",
                    c[r * out + o]
                );
            }
        }
    }
}
