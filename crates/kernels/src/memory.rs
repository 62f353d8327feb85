//! The allocator setting that BERT-sized inference needs on glibc.
//!
//! Every op returns a fresh tensor, and a BERT layer at batch 32 × 128 tokens allocates and frees some 75 MB of
//! them. With its default, adaptive thresholds, glibc's malloc sometimes hands such blocks back to the kernel
//! (`munmap`, or trimming the heap top) and then maps them again for the next op, and every 4 KB page of the new
//! mapping is a page fault that the kernel must zero. Measured here (`kernel_bench`, 2 threads): one encoder layer
//! took 77 ms on a fresh heap and 97 ms after the other benchmarks had run; with the thresholds below, 77 ms both
//! times. PyTorch's layer took 90 ms either way.
//!
//! Training is the extreme case: a LoRA step on a 40M-parameter decoder builds a graph of some 2 GB of activations
//! and frees it at the end of the step. With the heap trimmed past 256 MB, every step faulted most of it back in
//! (page clearing was 12% of the profile); never trimming took `bench/tune_speed.py`
//! from 0.88x to 1.07-1.14x PyTorch.

/// Makes glibc's malloc keep freed memory for reuse: blocks up to 32 MB come from the heap instead of fresh `mmap`s,
/// and free memory at the top of the heap is kept (up to 2 GB) rather than returned to the kernel.
///
/// Process-wide, so it is for the binary to call, once, early in `main` (before other threads allocate). The cost is
/// that the process's resident memory stays at its peak. Returns whether the settings took effect: false on
/// targets other than Linux with glibc, where it does nothing.
pub fn keep_freed_memory_for_reuse() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // From glibc's <malloc.h>.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes two allocation thresholds, to values inside glibc's allowed ranges (the mmap
        // threshold may be at most 32 MB on 64-bit targets); it returns 1 on success.
        unsafe { mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_thresholds() {
        assert!(super::keep_freed_memory_for_reuse());
    }
}
