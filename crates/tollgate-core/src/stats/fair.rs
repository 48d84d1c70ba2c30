//! Weighted max-min fair shares: what each tenant should get of a number of slots, given what it
//! asked for and its weight. No tenant gets more than it asked for; what the satisfied leave is
//! split among the rest in proportion to their weights (water-filling).

/// One tenant's demand and weight in an interval.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    pub wanted: f64,
    pub weight: f64,
}

/// Fair allocation of `slots` to `demands`, in the same order.
pub fn max_min_shares(slots: f64, demands: &[Demand]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    let per_weight = |d: &Demand| d.wanted / d.weight.max(f64::MIN_POSITIVE);
    order.sort_by(|&a, &b| per_weight(&demands[a]).total_cmp(&per_weight(&demands[b])));
    let mut out = vec![0.0; demands.len()];
    let mut left = slots.max(0.0);
    let mut weight_left: f64 = demands.iter().map(|d| d.weight.max(0.0)).sum();
    for i in order {
        let d = demands[i];
        let w = d.weight.max(0.0);
        let offer = if weight_left > 0.0 {
            left * w / weight_left
        } else {
            0.0
        };
        let got = offer.min(d.wanted.max(0.0));
        out[i] = got;
        left -= got;
        weight_left -= w;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(wanted: f64, weight: f64) -> Demand {
        Demand { wanted, weight }
    }

    #[test]
    fn noisy_tenant_gets_what_the_others_leave() {
        let s = max_min_shares(100.0, &[d(1000.0, 1.0), d(10.0, 1.0), d(10.0, 1.0)]);
        assert_eq!(s, vec![80.0, 10.0, 10.0]);
    }

    #[test]
    fn weights_split_contended_slots() {
        let s = max_min_shares(90.0, &[d(1000.0, 2.0), d(1000.0, 1.0)]);
        assert_eq!(s, vec![60.0, 30.0]);
    }

    #[test]
    fn nobody_gets_more_than_asked() {
        let s = max_min_shares(100.0, &[d(5.0, 1.0), d(7.0, 3.0)]);
        assert_eq!(s, vec![5.0, 7.0]);
    }
}
