#!/usr/bin/env python3
"""Reference values for the unit tests in src/stats/ (standard library only).

Usage: python3 scripts/stats_reference.py

Each number is computed here independently of the Rust code: the mixture likelihood
ratio from the equal-sample formula of Johari, Pekelis & Walsh (and, for unequal
samples, by numerically integrating the mixture over the effect), confidence
intervals by bisection on the likelihood ratio instead of the closed form, normal
quantiles with statistics.NormalDist, sample sizes by scanning n one at a time.
"""
import math
from statistics import NormalDist, fmean, variance

ALPHA = 0.05
TAU2_STD = 0.01  # mixture variance in units of the per-observation variance


def jpw_lambda(n, v, tau2, d):
    """JPW normal-mixture SPRT, n per arm, V = variance of one pair difference."""
    return math.sqrt(v / (v + n * tau2)) * math.exp(
        n * n * tau2 * d * d / (2 * v * (v + n * tau2))
    )


def mixture_lambda_numeric(d, s2, tau2, theta0=0.0, steps=200_001):
    """Mixture likelihood ratio of an estimate d ~ N(theta, s2), theta ~ N(theta0, tau2),
    against theta = theta0, by the trapezoid rule over theta (+-12 prior sd)."""
    tau = math.sqrt(tau2)
    lo, hi = theta0 - 12 * tau, theta0 + 12 * tau
    h = (hi - lo) / (steps - 1)
    total = 0.0
    for i in range(steps):
        th = lo + i * h
        ratio = math.exp((-((d - th) ** 2) + (d - theta0) ** 2) / (2 * s2))
        prior = math.exp(-((th - theta0) ** 2) / (2 * tau2)) / math.sqrt(2 * math.pi * tau2)
        w = 0.5 if i in (0, steps - 1) else 1.0
        total += w * ratio * prior
    return total * h


def ci_by_bisection(lam_at, d, alpha, scale):
    """Always-valid CI: the thetas whose likelihood ratio stays below 1/alpha."""
    def edge(sign):
        inside, outside = d, d + sign * scale
        while lam_at(outside) < 1 / alpha:
            outside += sign * scale
        for _ in range(200):
            mid = (inside + outside) / 2
            if lam_at(mid) < 1 / alpha:
                inside = mid
            else:
                outside = mid
        return (inside + outside) / 2
    return edge(-1), edge(+1)


def rate_case():
    print("## error rate: control 60/1000, candidate 90/1000")
    n = 1000
    pa, pb = 60 / n, 90 / n
    # variance from the Agresti-Caffo adjusted rates (x+1)/(n+2)
    qa, qb = 61 / 1002, 91 / 1002
    v = qa * (1 - qa) + qb * (1 - qb)
    tau2 = TAU2_STD * v / 2
    d = pb - pa
    lam = jpw_lambda(n, v, tau2, d)
    print(f"difference = {d!r}")
    print(f"lambda = {lam!r}")
    print(f"p_value = {min(1.0, 1 / lam)!r}")
    lo, hi = ci_by_bisection(lambda th: jpw_lambda(n, v, tau2, d - th), d, ALPHA, 0.01)
    print(f"ci = ({lo!r}, {hi!r})")


def mean_case():
    print("## mean, unequal arms: control n=400 mean 1.0 var 0.25; candidate n=100 mean 1.2 var 0.36")
    na, ma, va = 400, 1.0, 0.25
    nb, mb, vb = 100, 1.2, 0.36
    d = mb - ma
    s2 = va / na + vb / nb
    tau2 = TAU2_STD * (va + vb) / 2
    lam = mixture_lambda_numeric(d, s2, tau2)
    print(f"difference = {d!r}")
    print(f"lambda (numeric mixture) = {lam!r}")
    print(f"p_value = {min(1.0, 1 / lam)!r}")
    lo, hi = ci_by_bisection(
        lambda th: mixture_lambda_numeric(d, s2, tau2, th, steps=20_001), d, ALPHA, 0.05
    )
    print(f"ci (bisection on numeric mixture, 20k steps) = ({lo!r}, {hi!r})")


def welford_case():
    print("## moments of a fixed sample")
    xs = [12.5, 80.0, 33.25, 7.0, 150.5, 42.0, 42.0, 9.75]
    print(f"mean = {fmean(xs)!r}, sample variance = {variance(xs)!r}")


def quantile_case():
    print("## normal quantiles (NormalDist().inv_cdf)")
    for p in (1e-6, 0.001, 0.02425, 0.05, 0.2, 0.5, 0.8, 0.975, 0.999):
        print(f"inv_cdf({p}) = {NormalDist().inv_cdf(p)!r}")


def sample_size_case(effect):
    print(f"## further samples: control 5% errors, effect +{effect}, equal arms")
    pa, pb = 0.05, 0.05 + effect
    va, vb = pa * (1 - pa), pb * (1 - pb)
    tau2 = TAU2_STD * (va + vb) / 2
    z = NormalDist().inv_cdf(0.8)
    n = 1
    while True:
        s2 = (va + vb) / n
        d = effect - z * math.sqrt(s2)
        if d > 0 and jpw_lambda(n, va + vb, tau2, d) >= 1 / ALPHA:
            break
        n += 1
    print(f"n per arm (power 0.8) = {n}")
    n = 1
    while not jpw_lambda(n, va + vb, tau2, effect) >= 1 / ALPHA:
        n += 1
    print(f"n per arm (power 0.5: the observed difference equals the effect) = {n}")


if __name__ == "__main__":
    rate_case()
    mean_case()
    welford_case()
    quantile_case()
    sample_size_case(0.02)
    sample_size_case(0.05)
