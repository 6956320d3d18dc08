//! Biometric verification / identification metrics (ISO/IEC 19795 style), pure functions.

/// Equal error rate: the smallest `max(FAR, FRR)` over all thresholds, accepting `score >= t`.
pub fn eer(genuine: &[f32], impostor: &[f32]) -> f32 {
    if genuine.is_empty() || impostor.is_empty() {
        return f32::NAN;
    }
    let mut g = genuine.to_vec();
    let mut i = impostor.to_vec();
    g.sort_by(f32::total_cmp);
    i.sort_by(f32::total_cmp);
    let mut thresholds: Vec<f32> = g.iter().chain(&i).copied().collect();
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    let (ng, ni) = (g.len() as f32, i.len() as f32);
    let (mut gi, mut ii) = (0usize, 0usize); // counts below t
    let mut best = 1f32;
    for t in thresholds.into_iter().chain(std::iter::once(f32::INFINITY)) {
        while gi < g.len() && g[gi] < t {
            gi += 1;
        }
        while ii < i.len() && i[ii] < t {
            ii += 1;
        }
        let frr = gi as f32 / ng;
        let far = (i.len() - ii) as f32 / ni;
        best = best.min(far.max(frr));
    }
    best
}

/// The threshold `t` such that at most `far * n` impostors score strictly above it.
pub fn threshold_at_far(impostor: &[f32], far: f64) -> f32 {
    if impostor.is_empty() {
        return f32::NAN;
    }
    let mut desc = impostor.to_vec();
    desc.sort_by(|a, b| b.total_cmp(a));
    let allowed = (far * desc.len() as f64).floor() as usize;
    desc.get(allowed).copied().unwrap_or(f32::NEG_INFINITY)
}

/// Fraction of genuine scores strictly above `threshold`.
pub fn tar_above(genuine: &[f32], threshold: f32) -> f32 {
    if genuine.is_empty() {
        return f32::NAN;
    }
    genuine.iter().filter(|&&s| s > threshold).count() as f32 / genuine.len() as f32
}

/// Leave-one-out rank-1 identification rate: each sample whose identity has another sample
/// is a probe against all other samples. `similarity(i, j)` scores a pair.
pub fn rank1(ids: &[usize], similarity: impl Fn(usize, usize) -> f32) -> f32 {
    let mut probes = 0usize;
    let mut hits = 0usize;
    for i in 0..ids.len() {
        if !ids
            .iter()
            .enumerate()
            .any(|(j, &id)| j != i && id == ids[i])
        {
            continue;
        }
        probes += 1;
        let best = (0..ids.len())
            .filter(|&j| j != i)
            .max_by(|&a, &b| similarity(i, a).total_cmp(&similarity(i, b)));
        if best.is_some_and(|j| ids[j] == ids[i]) {
            hits += 1;
        }
    }
    if probes == 0 {
        f32::NAN
    } else {
        hits as f32 / probes as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_scores_have_zero_eer() {
        assert_eq!(eer(&[0.8, 0.9, 0.7], &[0.1, 0.2, 0.3, 0.65]), 0.0);
    }

    #[test]
    fn overlapping_scores_have_the_expected_eer() {
        // One of four genuine scores sits below one of four impostors.
        let e = eer(&[0.2, 0.8, 0.9, 0.95], &[0.1, 0.3, 0.35, 0.4]);
        assert!((e - 0.25).abs() < 1e-6, "{e}");
        // Identical distributions: EER near 0.5.
        let s: Vec<f32> = (0..100).map(|i| i as f32).collect();
        assert!((eer(&s, &s) - 0.5).abs() < 0.02);
    }

    #[test]
    fn threshold_at_far_admits_at_most_the_allowed_impostors() {
        let imp: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = threshold_at_far(&imp, 1e-2);
        assert!(imp.iter().filter(|&&s| s > t).count() <= 10);
        assert!(imp.iter().filter(|&&s| s >= t).count() > 10);
        assert_eq!(tar_above(&[0.995, 0.5, 0.999], t), 2.0 / 3.0);
    }

    #[test]
    fn rank1_counts_nearest_neighbour_identity() {
        // 1-D "embeddings": identity 0 near 0, identity 1 near 10, and one sample of identity 1
        // near 0 that steals both identity-0 probes and is itself matched to identity 0.
        let x = [0.0f32, 0.5, 10.0, 10.4, 0.2];
        let ids = [0, 0, 1, 1, 1];
        let r = rank1(&ids, |i, j| -(x[i] - x[j]).abs());
        assert!((r - 0.4).abs() < 1e-6, "{r}");
        // Identity 2 has a single sample: it is not a probe, only a distractor.
        let r = rank1(&[0, 0, 2], |i, j| if i + j == 1 { 1.0 } else { 0.0 });
        assert_eq!(r, 1.0);
    }
}
