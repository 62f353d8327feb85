//! The warm-up + cosine schedule at the steps where its formula has known values.
//!
//! ```text
//! cargo test -p knowhow-tune --test train_schedule
//! ```

use knowhow_tune::schedule::{CosineSchedule, Warmup};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 * b.abs().max(1.0)
}

#[test]
fn warm_up_is_linear_from_zero_to_the_peak() {
    let schedule = CosineSchedule {
        base_lr: 2e-4,
        warmup_steps: 10,
        total_steps: 110,
        min_lr_ratio: 0.0,
    };
    assert_eq!(schedule.lr(0), 0.0);
    assert!(close(schedule.lr(5), 1e-4));
    assert!(close(schedule.lr(9), 1.8e-4));
    assert!(close(schedule.lr(10), 2e-4));
}

#[test]
fn cosine_decays_to_the_floor() {
    for min_lr_ratio in [0.0, 0.1] {
        let schedule = CosineSchedule {
            base_lr: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            min_lr_ratio,
        };
        let floor = 1e-3 * min_lr_ratio;
        // Half-way through the decay the cosine term is ½; a quarter of the way, (1 + cos(π/4))/2.
        assert!(
            close(schedule.lr(60), floor + (1e-3 - floor) * 0.5),
            "{}",
            schedule.lr(60)
        );
        let quarter = 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!((schedule.lr(35) - (floor + (1e-3 - floor) * quarter)).abs() < 1e-15);
        assert!(close(schedule.lr(110), floor));
        let decay: Vec<f64> = (10..=110).map(|step| schedule.lr(step)).collect();
        assert!(
            decay.windows(2).all(|w| w[1] < w[0]),
            "the decay must be strictly decreasing"
        );
    }
}

#[test]
fn no_warm_up_starts_at_the_peak_and_warm_up_ratio_rounds_up() {
    let schedule = CosineSchedule {
        base_lr: 0.5,
        warmup_steps: 0,
        total_steps: 4,
        min_lr_ratio: 0.0,
    };
    assert_eq!(schedule.lr(0), 0.5);
    assert!(close(schedule.lr(2), 0.25));
    assert_eq!(Warmup::Ratio(0.03).steps(100), 3);
    assert_eq!(Warmup::Ratio(0.1).steps(15), 2);
    assert_eq!(Warmup::Ratio(0.0).steps(15), 0);
    assert_eq!(Warmup::Steps(7).steps(15), 7);
}
