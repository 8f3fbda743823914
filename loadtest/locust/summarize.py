"""summarize.py DIR META_JSON (or summarize.py --chart DIR: the chart again) — turns one locust run (DIR/locust_*.csv, DIR/timeline.csv,
DIR/.pv_overall.json, DIR/.pv_burst.json) and what loadtest/locust/run recorded around it
(META_JSON: scenario, command, date, commit, machine, data set, pgsim knobs, the ledger
file and its size before the run, the database figures of a billing burst) into
DIR/summary.json, DIR/summary.md and DIR/chart.png."""

import csv
import json
import os
import sys
from collections import Counter, defaultdict

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# What the seed (choizz156/pillivery, Spring on 2 vCPU, its README) reported for each
# scenario, and where our own benchmark scripts stand, to print beside our figures.
SEED = {
    "browse": "cached pages 1–5: 10–20 ms average; uncached pages 6–10: 200–800 ms average "
              "(30 VUsers; its page 6 answered 500)",
    "item_detail": "no figure in the seed (bench-catalog.sh, 30 closed-loop clients: p50 4.5 ms, "
                   "p99 8.6 ms, 6,474 req/s)",
    "orders": "no measured figure; its target: 86.8 req/s at ≤ 0.2 s response (estimated 18 VUsers)",
    "approval": "approval ~2 s average at 100 VUsers (KakaoPay called inside the request); "
                "with 20 % mock failures and 3 retries, 4.16 % of approvals and 0.6 % of calls failed",
    "stress300": "from 300 VUsers the waiting connection pool grew and response times rose sharply "
                 "(cached pages excepted); the payment circuit breaker tripped from 300 VUsers",
    "stress1000": "from 300 VUsers the waiting connection pool grew and response times rose sharply "
                  "(cached pages excepted); the payment circuit breaker tripped from 300 VUsers",
    "billing_burst": "no figure in the seed (Spring Batch + Quartz); bench-billing.sh (no browsing, "
                     "one worker, pgsim 0 ms, REPORT.md issue 6): 573 charges/s, 20,000 drained in 35 s",
}

DESCRIPTION = {
    "browse": "Category listing, pages 1–10 of the nine categories (pages 1–5 served from the "
              "Redis page cache, 6–10 from Postgres), closed loop.",
    "item_detail": "Item detail of random visible items of the data set (each counts a view), closed loop.",
    "orders": "Place-and-pay: each user logs in once as a reference user, places a one-time order "
              "of 1–3 on-sale items, waits for the redirect URL, opens pgsim's buyer page "
              "(auto-approve: 302 to our approval URL), follows it, and waits until the order is paid.",
    "approval": "The place-and-pay flow with pgsim answering every KakaoPay call in 2 s (the seed's "
                "approval test): ready and approve each take the gateway's 2 s in the worker, so the two "
                "`?wait=5` long polls, which wait for them, carry the 2 s (and the HTTP p95/p99 with them).",
    "stress300": "Mixed traffic (60 % category browsing, 30 % item detail, 10 % place-and-pay; "
                 "0.5–1.5 s think time) ramping linearly to 300 users, then holding.",
    "stress1000": "Mixed traffic (60 % category browsing, 30 % item detail, 10 % place-and-pay; "
                  "0.5–1.5 s think time) ramping linearly to 1,000 users, then holding.",
    "billing_burst": "The billing-day burst: every active subscription of the reference data set made "
                     "due at once and triggered through one `subscriptions.sweep` row while 30 users "
                     "browse category pages; one monitor reads pgsim's ledger size every second.",
}


def num(v, cast=float):
    try:
        return cast(v)
    except (TypeError, ValueError):
        return None


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def fmt(v, unit="", digits=1):
    if v is None or v == "":
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def endpoints_of(stats):
    out = []
    for r in stats:
        if r["Name"] == "Aggregated":
            continue
        # our HTTP request names carry their method; custom events get their type
        name = f"{r['Type']} {r['Name']}" if r["Type"] in ("FLOW", "BILLING") else r["Name"]
        out.append({
            "name": name,
            "requests": num(r["Request Count"], int),
            "failures": num(r["Failure Count"], int),
            "rps": round(num(r["Requests/s"]) or 0.0, 2),
            "p50_ms": num(r["50%"]),
            "p95_ms": num(r["95%"]),
            "p99_ms": num(r["99%"]),
            "avg_ms": round(num(r["Average Response Time"]) or 0.0, 2),
        })
    return out


def find(endpoints, needle):
    for e in endpoints:
        if needle in e["name"]:
            return e
    return None


def knee_of(timeline, window=5):
    """First user count at which, over a `window`-second span, the failure rate exceeds 1 %
    or the median of the per-second p95s exceeds 1 s."""
    for i in range(window - 1, len(timeline)):
        span = timeline[i - window + 1:i + 1]
        req = sum(r["requests"] for r in span)
        fail = sum(r["failures"] for r in span)
        p95s = sorted(r["p95_ms"] for r in span if r["p95_ms"] is not None)
        p95 = p95s[len(p95s) // 2] if p95s else None
        if req and fail / req > 0.01:
            return {"knee_users": span[0]["users"], "knee_t_s": span[0]["t"],
                    "knee_reason": f"failure rate {100 * fail / req:.1f} % over {window} s"}
        if p95 is not None and p95 > 1000:
            return {"knee_users": span[0]["users"], "knee_t_s": span[0]["t"],
                    "knee_reason": f"p95 {p95:,.0f} ms (median of {window} per-second p95s)"}
    return {"knee_users": None, "knee_t_s": None, "knee_reason": "none: failure rate ≤ 1 % and p95 ≤ 1 s throughout"}


def saturation_of(timeline, window=10, share=0.75):
    """Where throughput stops following the users: the first user count at which the
    `window`-second mean of requests/s per user falls below `share` of its value at low
    load (the median over the windows with 10-30 % of the peak users)."""
    most_users = max((r["users"] for r in timeline), default=0)
    if len(timeline) < window or most_users < 10:
        return {}
    points = []  # (users, mean req/s, t) per window
    for i in range(window - 1, len(timeline)):
        span = timeline[i - window + 1:i + 1]
        users = sum(r["users"] for r in span) / window
        if users > 0:
            points.append((users, sum(r["requests"] for r in span) / window, span[-1]["t"]))
    low = sorted(rps / users for users, rps, _t in points if 0.1 * most_users <= users <= 0.3 * most_users)
    if not low:
        return {}
    base = low[len(low) // 2]
    out = {"req_per_user_low_load": round(base, 2), "saturation_users": None,
           "max_rps_10s_mean": round(max(rps for _u, rps, _t in points), 1)}
    for users, rps, t in points:
        if users > 0.3 * most_users and rps / users < share * base:
            out.update({"saturation_users": round(users), "saturation_t_s": t, "saturation_rps": round(rps, 1)})
            break
    return out


def ledger_checks(meta):
    path = meta.get("ledger_file")
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        entries = json.load(f).get("entries", [])
    run = entries[meta.get("ledger_start", 0):]
    approve_ids = Counter(e["partner_order_id"] for e in entries if e["kind"] == "approve")
    run_approves = [e for e in run if e["kind"] == "approve"]
    run_charges = [e for e in run if e["kind"] == "charge"]
    doubles_approve = sum(1 for p in {e["partner_order_id"] for e in run_approves} if approve_ids[p] > 1)
    doubles_charge = sum(1 for n in Counter(e["sid"] for e in run_charges).values() if n > 1)
    return {"ledger_approvals": len(run_approves), "ledger_charges": len(run_charges),
            "double_approvals": doubles_approve, "double_charges_per_sid": doubles_charge,
            "double_charges": doubles_approve + doubles_charge}


def chart(path, scenario, timeline, extra, title):
    t = [r["t"] for r in timeline]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1.6]})
    ax1, ax2, ax3 = axes
    ax1.plot(t, [r["requests"] for r in timeline], color="tab:blue", lw=1.2, label="requests/s")
    ax1.plot(t, [r["failures"] for r in timeline], color="tab:red", lw=1.2, label="failures/s")
    if any(r["charges"] for r in timeline):
        # read once a second from pgsim: a 5 s mean evens out the polls' phase
        ch = [r["charges"] for r in timeline]
        mean5 = [sum(ch[max(0, i - 4):i + 1]) / len(ch[max(0, i - 4):i + 1]) for i in range(len(ch))]
        ax1.plot(t, mean5, color="tab:green", lw=1.4, label="charges/s (pgsim ledger, 5 s mean)")
    if any(r["flows_paid"] for r in timeline):
        ax1b = ax1.twinx()
        ax1b.plot(t, [r["flows_paid"] for r in timeline], color="tab:purple", lw=1, alpha=0.7,
                  label="orders paid/s")
        ax1b.set_ylabel("orders paid/s", color="tab:purple")
        ax1b.set_ylim(bottom=0)
        h1, l1 = ax1.get_legend_handles_labels()
        h2, l2 = ax1b.get_legend_handles_labels()
        ax1.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    else:
        ax1.legend(loc="upper left", fontsize=8)
    ax1.set_ylabel("per second")
    ax1.set_ylim(bottom=0)
    ax1.grid(alpha=0.3)
    ax1.set_title(title, fontsize=10)

    for key, color in (("p50_ms", "tab:green"), ("p95_ms", "tab:orange"), ("p99_ms", "tab:red")):
        xs = [r["t"] for r in timeline if r[key] is not None]
        ys = [max(r[key], 0.1) for r in timeline if r[key] is not None]
        ax2.plot(xs, ys, color=color, lw=1.1, label=key.replace("_ms", ""))
    ax2.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
    ax2.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax2.yaxis.set_major_formatter(plain)
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_ylabel("latency, ms (log)")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(loc="upper left", fontsize=8)

    ax3.step(t, [r["users"] for r in timeline], where="post", color="black", lw=1.2)
    ax3.set_ylabel("users")
    ax3.set_ylim(bottom=0)
    ax3.set_xlabel("seconds since start")
    ax3.grid(alpha=0.3)

    burst = [r["t"] for r in timeline if r["phase"] == "burst"]
    if burst:
        for ax in axes:
            ax.axvspan(min(burst), max(burst) + 1, color="tab:green", alpha=0.08,
                       label="billing burst" if ax is ax3 else None)
        ax3.legend(loc="lower left", fontsize=8)
    if extra.get("knee_t_s") is not None:
        for ax in axes:
            ax.axvline(extra["knee_t_s"], color="tab:red", ls="--", lw=1)
        ax3.text(extra["knee_t_s"], ax3.get_ylim()[1] * 0.9, f" knee: {extra['knee_users']} users",
                 fontsize=8, va="top", color="tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def read_timeline(out_dir):
    timeline = []
    for r in read_csv(os.path.join(out_dir, "timeline.csv")):
        timeline.append({"t": int(r["t"]), "users": int(r["users"]), "requests": int(r["requests"]),
                         "failures": int(r["failures"]), "p50_ms": num(r["p50_ms"]), "p95_ms": num(r["p95_ms"]),
                         "p99_ms": num(r["p99_ms"]), "flows_paid": int(r["flows_paid"]),
                         "charges": int(r["charges"]), "phase": r["phase"]})
    # drop the idle seconds after the last user stopped
    while timeline and timeline[-1]["users"] == 0 and timeline[-1]["requests"] == 0:
        timeline.pop()
    return timeline


def chart_title(summary):
    return (f"{summary['scenario']}: {summary['users']} users peak, {summary['data_set']} data set, "
            f"{summary['date']}, {summary['commit']}")


def redraw(out_dir):
    """summarize.py --chart DIR: draws DIR/chart.png again from timeline.csv and summary.json."""
    with open(os.path.join(out_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    chart(os.path.join(out_dir, "chart.png"), summary["scenario"], read_timeline(out_dir),
          summary["extra"], chart_title(summary))


def main():
    if sys.argv[1] == "--chart":
        redraw(sys.argv[2])
        return
    out_dir, meta_path = sys.argv[1], sys.argv[2]
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    scenario = meta["scenario"]
    work_dir = meta.get("work_dir", out_dir)
    stats = read_csv(os.path.join(out_dir, "locust_stats.csv"))
    failures = read_csv(os.path.join(out_dir, "locust_failures.csv"))
    timeline = read_timeline(out_dir)
    overall = {}
    p = os.path.join(work_dir, ".pv_overall.json")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            overall = json.load(f)
    burst = {}
    p = os.path.join(work_dir, ".pv_burst.json")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            burst = json.load(f)

    endpoints = endpoints_of(stats)
    http = overall.get("all", {})
    duration = len(timeline)
    requests = http.get("requests") or 0
    fails = http.get("failures") or 0
    extra = {}

    if scenario == "browse":
        for key, needle in (("cached", "[cached"), ("uncached", "[uncached")):
            e = find(endpoints, needle)
            if e:
                extra[f"{key}_avg_ms"] = e["avg_ms"]
                extra[f"{key}_p95_ms"] = e["p95_ms"]
                extra[f"{key}_rps"] = e["rps"]
    if scenario in ("orders", "approval", "stress300", "stress1000"):
        for key, needle in (("order_to_paid", "order→paid"), ("approve_to_paid", "approve→paid"),
                            ("approve_redirect", "kakaopay/approve"), ("place_order", "POST /api/orders")):
            e = find(endpoints, needle)
            if e:
                extra[f"{key}_p50_ms"] = e["p50_ms"]
                extra[f"{key}_p95_ms"] = e["p95_ms"]
                extra[f"{key}_p99_ms"] = e["p99_ms"]
                if key == "order_to_paid":
                    extra["orders_paid"] = e["requests"] - e["failures"]
                    extra["orders_failed"] = e["failures"]
                    extra["orders_paid_per_sec"] = round(extra["orders_paid"] / duration, 2) if duration else None
    if scenario in ("stress300", "stress1000"):
        extra.update(knee_of(timeline))
        extra.update(saturation_of(timeline))
        extra["peak_rps"] = max((r["requests"] for r in timeline), default=0)
    if scenario == "billing_burst":
        post = meta.get("post", {})
        extra.update({"subscriptions_due": burst.get("due"), "charged": post.get("charged"),
                      "charges_per_sec": post.get("charges_per_sec"), "drain_s": post.get("drain_s"),
                      "first_charge_s": post.get("first_charge_s"), "still_due": post.get("still_due"),
                      "failed_jobs": post.get("failed_jobs"), "burst_complete": burst.get("complete"),
                      "charges_per_sec_peak_seen": max((r["charges"] for r in timeline), default=0)})
        for ph in ("before", "burst", "after"):
            s = overall.get("phases", {}).get(ph)
            if s:
                extra[f"browse_{ph}_p50_ms"] = s["p50_ms"]
                extra[f"browse_{ph}_p95_ms"] = s["p95_ms"]
                extra[f"browse_{ph}_p99_ms"] = s["p99_ms"]
                extra[f"browse_{ph}_failures"] = s["failures"]
    if scenario in ("orders", "approval", "billing_burst", "stress300", "stress1000"):
        extra.update(ledger_checks(meta))
    if failures:
        by_error = Counter()
        for r in failures:
            by_error[f"{r['Name']}: {r['Error']}"] += int(r["Occurrences"])
        extra["failures_by_error"] = dict(by_error.most_common(10))
    # locust's "CPU usage above 90%" warnings: the load generator itself was saturated
    extra["locust_cpu_warnings"] = meta.get("locust_cpu_warnings", 0)
    extra["pgsim_knobs"] = meta.get("knobs")

    summary = {
        "scenario": scenario,
        "command": meta["command"],
        "date": meta["date"],
        "commit": meta["commit"],
        "machine": meta["machine"],
        "data_set": meta["data_set"],
        "users": max((r["users"] for r in timeline), default=0),
        "duration_s": duration,
        "requests": requests,
        "failures": fails,
        "failure_rate": round(fails / requests, 5) if requests else 0.0,
        "rps": round(requests / duration, 2) if duration else 0.0,
        "p50_ms": http.get("p50_ms"),
        "p95_ms": http.get("p95_ms"),
        "p99_ms": http.get("p99_ms"),
        "endpoints": endpoints,
        "extra": extra,
    }
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write("\n")

    chart(os.path.join(out_dir, "chart.png"), scenario, timeline, extra, chart_title(summary))

    md = [f"# Locust scenario `{scenario}`", "", DESCRIPTION.get(scenario, ""), "",
          f"- Command: `{meta['command']}` (stack: `ops/run --reference --release`)",
          f"- Date: {meta['date']} · commit `{meta['commit']}`",
          f"- Machine: {meta['machine']}",
          f"- Data set: {meta['data_set']} · build: {meta.get('profile', '?')}",
          f"- pgsim knobs: `{json.dumps(meta.get('knobs'), ensure_ascii=False)}`" if meta.get("knobs") else
          "- pgsim knobs: unchanged",
          "", "## Result (HTTP requests; FLOW/BILLING events apart)", "",
          "| users (peak) | duration | requests | failures | failure rate | req/s | p50 | p95 | p99 |",
          "|---|---|---|---|---|---|---|---|---|",
          f"| {summary['users']} | {duration} s | {requests:,} | {fails:,} | {100 * summary['failure_rate']:.2f} % "
          f"| {summary['rps']:,.1f} | {fmt(summary['p50_ms'], ' ms')} | {fmt(summary['p95_ms'], ' ms')} "
          f"| {fmt(summary['p99_ms'], ' ms')} |",
          "", "## Endpoints (locust_stats.csv)", "",
          "| name | requests | failures | req/s | p50 ms | p95 ms | p99 ms | avg ms |",
          "|---|---|---|---|---|---|---|---|"]
    for e in endpoints:
        md.append(f"| `{e['name']}` | {e['requests']:,} | {e['failures']:,} | {e['rps']:,.2f} | {fmt(e['p50_ms'])} "
                  f"| {fmt(e['p95_ms'])} | {fmt(e['p99_ms'])} | {fmt(e['avg_ms'])} |")
    md += ["", "FLOW events are whole payment flows (order→paid: placing the order to seeing it paid; "
           "approve→paid: our approve redirect to paid); BILLING events are charges seen in pgsim's "
           "ledger, timed from the trigger." if any(e["name"].startswith(("FLOW", "BILLING")) for e in endpoints)
           else "", "", "## Scenario figures", ""]
    for k, v in extra.items():
        if k in ("failures_by_error", "pgsim_knobs"):
            continue
        md.append(f"- `{k}`: {fmt(v)}")
    if extra.get("failures_by_error"):
        md += ["", "Failures (locust_failures.csv):", "", "| request: error | count |", "|---|---|"]
        for k, v in extra["failures_by_error"].items():
            md.append(f"| {k} | {v:,} |")
    md += ["", "## Beside the seed", "", "| | figure |", "|---|---|",
           f"| seed | {SEED.get(scenario, '—')} |", f"| ours | {ours_line(scenario, summary, extra)} |",
           "", "![chart](chart.png)", "",
           "Files: `locust_stats.csv`, `locust_stats_history.csv` (locust's 10 s windows), "
           "`locust_failures.csv`, `locust_exceptions.csv`, `timeline.csv` (exact per-second figures, the "
           "chart's data), `summary.json`.", ""]
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    print(json.dumps({k: summary[k] for k in ("scenario", "users", "requests", "failures", "rps",
                                               "p50_ms", "p95_ms", "p99_ms")} | {"extra": {
        k: v for k, v in extra.items() if k not in ("failures_by_error", "pgsim_knobs")}}, ensure_ascii=False))


def ours_line(scenario, s, x):
    if scenario == "browse":
        return (f"cached avg {fmt(x.get('cached_avg_ms'), ' ms')} (p95 {fmt(x.get('cached_p95_ms'), ' ms')}); "
                f"uncached avg {fmt(x.get('uncached_avg_ms'), ' ms')} (p95 {fmt(x.get('uncached_p95_ms'), ' ms')}); "
                f"{s['rps']:,.0f} req/s at {s['users']} users")
    if scenario in ("orders", "approval"):
        return (f"order→paid p50 {fmt(x.get('order_to_paid_p50_ms'), ' ms')}, approve→paid p50 "
                f"{fmt(x.get('approve_to_paid_p50_ms'), ' ms')}, approve redirect p50 "
                f"{fmt(x.get('approve_redirect_p50_ms'), ' ms')}; {fmt(x.get('orders_paid_per_sec'))} orders paid/s, "
                f"{s['rps']:,.1f} req/s, failure rate {100 * s['failure_rate']:.2f} %, "
                f"double charges {fmt(x.get('double_charges'))}")
    if scenario.startswith("stress"):
        knee = (f"knee at {x['knee_users']:,} users ({x.get('knee_reason')})" if x.get("knee_users") is not None
                else f"no knee up to {s['users']:,} users (failure rate ≤ 1 %, p95 ≤ 1 s)")
        if x.get("saturation_users") is not None:
            knee += (f"; throughput stops following the users at {x['saturation_users']:,} users "
                     f"({x['saturation_rps']:,.0f} req/s, under 75 % of the low-load "
                     f"{x['req_per_user_low_load']:.2f} req/s per user)")
        elif x.get("req_per_user_low_load") is not None:
            knee += (f"; throughput followed the users to the end of the ramp "
                     f"({x['req_per_user_low_load']:.2f} req/s per user at low load)")
        return (f"{knee}; peak {fmt(x.get('peak_rps'))} "
                f"req/s; failure rate {100 * s['failure_rate']:.2f} %")
    if scenario == "billing_burst":
        return (f"{fmt(x.get('charged'))} charged at {fmt(x.get('charges_per_sec'), '/s')}, drain "
                f"{fmt(x.get('drain_s'), ' s')}; browse p95 {fmt(x.get('browse_before_p95_ms'), ' ms')} before, "
                f"{fmt(x.get('browse_burst_p95_ms'), ' ms')} during the burst; double charges "
                f"{fmt(x.get('double_charges'))}")
    return f"p50 {fmt(s['p50_ms'], ' ms')}, p95 {fmt(s['p95_ms'], ' ms')}, {s['rps']:,.0f} req/s"


if __name__ == "__main__":
    main()
