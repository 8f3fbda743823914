"""Pillivery locust scenarios (run them with loadtest/locust/run, which sets the
environment below and picks the user classes per scenario).

User classes:
  BrowseUser      category listing pages 1-10 (1-5 cached, 6-10 from Postgres)
  ItemDetailUser  GET /api/items/{id}, random visible items of the data set
  OrderUser       place-and-pay: POST /api/orders, wait for the redirect URL, the
                  simulator's buyer page (auto-approve), our approve redirect, wait
                  until paid; order->paid and approve->paid fired as FLOW events
  BillingMonitor  (one) makes the reference subscriptions due, triggers the sweep,
                  and fires one BILLING event per charge seen in pgsim's ledger

Environment (set by loadtest/locust/run): PGSIM_URL, DATABASE_URL, PV_DATA_FILE (JSON
with on-sale and visible item ids and the user count), PV_RESULTS_DIR, PV_WORK_DIR, PV_WAIT ("0" or
"MIN-MAX" seconds between tasks), PV_PSQL (psql command), PV_BURST_DELAY_S,
PV_BURST_TAIL_S.

Besides locust's CSVs, every run writes PV_RESULTS_DIR/timeline.csv: per wall-clock
second the users, requests, failures and p50/p95/p99 of the HTTP requests (FLOW and
BILLING events counted apart), which summarize.py charts.
"""

import csv
import itertools
import json
import math
import os
import random
import subprocess
import time

import gevent
from locust import FastHttpUser, User, between, constant, events, task
from locust.exception import StopUser

CUSTOM_TYPES = ("FLOW", "BILLING")
CATEGORIES = ["EYE", "BONE", "BRAIN", "INTESTINE", "LIVER", "SKIN", "ANTIOXIDANT", "FATIGUE", "ETC"]
PASSWORD = "Test1234!"
RECEIVER = {"name": "홍길동", "phone": "010-1234-5678", "city": "Seoul", "detail_address": "1 Sejong-daero"}
STEP_TIMEOUT_S = 60.0

RESULTS_DIR = os.environ.get("PV_RESULTS_DIR", ".")
WORK_DIR = os.environ.get("PV_WORK_DIR", RESULTS_DIR)  # what summarize.py reads besides the CSVs
PGSIM_URL = os.environ.get("PGSIM_URL", "").rstrip("/")


def _load_data():
    path = os.environ.get("PV_DATA_FILE")
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {"on_sale": list(range(1, 40001)), "visible": list(range(1, 40001)), "users": 10000}


DATA = _load_data()
# Each locust user logs in as its own reference user, starting at a random offset.
_user_numbers = itertools.count(random.randrange(max(1, DATA["users"])))


def _wait_time():
    spec = os.environ.get("PV_WAIT", "0")
    if "-" in spec:
        lo, hi = (float(x) for x in spec.split("-", 1))
        return between(lo, hi)
    return constant(float(spec))


WAIT = _wait_time()


def error_of(resp):
    """`HTTP 503 dependency_down` / `HTTP 0 ConnectionRefused…`: what the failure CSV groups by."""
    code = ""
    try:
        code = resp.json().get("error", {}).get("code", "")
    except Exception:  # noqa: BLE001 - any body
        pass
    if not resp.status_code:
        return f"HTTP 0 {type(resp.error).__name__ if resp.error else 'no answer'}"
    return f"HTTP {resp.status_code} {code}".strip()


def fire(env, request_type, name, ms, exception=None):
    env.events.request.fire(request_type=request_type, name=name, response_time=ms,
                            response_length=0, exception=exception, context={})


# ---------------------------------------------------------------------------
# timeline: exact per-second figures, and overall percentiles per phase


class Timeline:
    def __init__(self):
        self.buckets = {}  # second -> [times], failures, {custom name: count}
        self.phase = "run"
        self.phases = {}  # phase -> [times], failures
        self.writer = None

    def add(self, request_type, name, ms, failed):
        sec = int(time.time())
        b = self.buckets.setdefault(sec, {"times": [], "failures": 0, "custom": {}, "custom_failures": 0})
        if request_type in CUSTOM_TYPES:
            if failed:
                b["custom_failures"] += 1
            else:
                key = f"{request_type} {name}"
                b["custom"][key] = b["custom"].get(key, 0) + 1
            return
        b["times"].append(ms)
        b["failures"] += int(failed)
        p = self.phases.setdefault(self.phase, {"times": [], "failures": 0})
        p["times"].append(ms)
        p["failures"] += int(failed)


TL = Timeline()


def pct(sorted_times, q):
    if not sorted_times:
        return ""
    i = min(len(sorted_times) - 1, max(0, math.ceil(q * len(sorted_times)) - 1))
    return round(sorted_times[i], 2)


def summary_of(times, failures):
    s = sorted(times)
    return {"requests": len(s), "failures": failures, "p50_ms": pct(s, 0.50),
            "p95_ms": pct(s, 0.95), "p99_ms": pct(s, 0.99),
            "avg_ms": round(sum(s) / len(s), 2) if s else ""}


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, exception=None, **_kw):
    TL.add(request_type, name, response_time or 0.0, exception is not None)


def _timeline_writer(environment):
    path = os.path.join(RESULTS_DIR, "timeline.csv")
    custom_names = ["FLOW order→paid", "FLOW approve→paid", "BILLING charges"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["t", "users", "requests", "failures", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                    "flows_paid", "flow_failures", "charges", "phase"])
        start = int(time.time())
        sec = start
        while True:
            gevent.sleep(max(0.0, sec + 1.2 - time.time()))
            b = TL.buckets.pop(sec, None) or {"times": [], "failures": 0, "custom": {}, "custom_failures": 0}
            s = sorted(b["times"])
            users = environment.runner.user_count if environment.runner else 0
            w.writerow([sec - start, users, len(s), b["failures"], pct(s, 0.5), pct(s, 0.95), pct(s, 0.99),
                        round(s[-1], 2) if s else "", b["custom"].get(custom_names[0], 0),
                        b["custom_failures"], b["custom"].get(custom_names[2], 0), TL.phase])
            f.flush()
            sec += 1


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    TL.writer = gevent.spawn(_timeline_writer, environment)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw):
    gevent.sleep(1.5)  # let the last second be written
    if TL.writer:
        TL.writer.kill()
    every = {"times": [], "failures": 0}
    phases = {}
    for name, p in TL.phases.items():
        every["times"].extend(p["times"])
        every["failures"] += p["failures"]
        phases[name] = summary_of(p["times"], p["failures"])
    out = {"all": summary_of(every["times"], every["failures"]), "phases": phases}
    with open(os.path.join(WORK_DIR, ".pv_overall.json"), "w", encoding="utf-8") as f:
        json.dump(out, f)


# ---------------------------------------------------------------------------
# users


class BrowseUser(FastHttpUser):
    """Category listing, pages 1-10 of the nine categories (default sort, 20 a page)."""
    weight = 6
    wait_time = WAIT

    @task
    def category_page(self):
        cat = random.choice(CATEGORIES)
        page = random.randint(1, 10)
        name = ("GET /api/items?category [cached p1-5]" if page <= 5
                else "GET /api/items?category [uncached p6-10]")
        with self.client.get(f"/api/items?category={cat}&page={page}", name=name,
                             catch_response=True) as r:
            if r.status_code != 200:
                r.failure(error_of(r))


class ItemDetailUser(FastHttpUser):
    """Item detail of a random visible (not deleted) item; counts a view."""
    weight = 3
    wait_time = WAIT

    @task
    def item_detail(self):
        item = random.choice(DATA["visible"])
        with self.client.get(f"/api/items/{item}", name="GET /api/items/{id}", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(error_of(r))


class StepFailed(Exception):
    pass


class OrderUser(FastHttpUser):
    """One reference user placing one-time orders and paying them through pgsim."""
    weight = 1
    wait_time = WAIT
    # long polls of up to 5 s plus the gateway's latency
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self):
        self.token = None
        self.login()

    def login(self):
        n = next(_user_numbers) % DATA["users"] + 1
        self.email = f"user{n}@pillivery.test"
        with self.client.post("/api/auth/login", json={"email": self.email, "password": PASSWORD},
                              name="POST /api/auth/login", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(error_of(r))
                raise StopUser()
            self.token = r.json()["access_token"]

    def headers(self):
        return {"authorization": f"Bearer {self.token}"}

    def order_body(self):
        items = random.sample(DATA["on_sale"], random.randint(1, 3))
        return {"kind": "one_time", "receiver": RECEIVER,
                "lines": [{"item_id": i, "quantity": random.randint(1, 3)} for i in items]}

    def wait_past(self, oid, state, name):
        """Long-polls GET /api/orders/{id}?wait=5 until the order leaves `state`."""
        give_up = time.time() + STEP_TIMEOUT_S
        while True:
            with self.client.get(f"/api/orders/{oid}?wait=5", headers=self.headers(), name=name,
                                 catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(error_of(r))
                    raise StepFailed(f"{name}: {error_of(r)}")
                order = r.json()
            if order["status"] != state:
                return order
            if time.time() >= give_up:
                raise StepFailed(f"order stayed {state} for {STEP_TIMEOUT_S:.0f} s")

    @task
    def place_and_pay(self):
        t0 = time.time()
        try:
            self._cycle(t0)
        except StepFailed as e:
            fire(self.environment, "FLOW", "order→paid", (time.time() - t0) * 1000, e)

    def _cycle(self, t0):
        with self.client.post("/api/orders", json=self.order_body(), headers=self.headers(),
                              name="POST /api/orders", catch_response=True) as r:
            if r.status_code == 401:
                r.failure(error_of(r))
                self.login()
                raise StepFailed("token expired")
            if r.status_code != 201:
                r.failure(error_of(r))
                raise StepFailed(f"place: {error_of(r)}")
            oid = r.json()["id"]

        order = self.wait_past(oid, "pending_payment", "GET /api/orders/{id}?wait=5 [until ready]")
        redirect = (order.get("payment") or {}).get("redirect_url")
        if order["status"] != "payment_ready" or not redirect:
            raise StepFailed(f"after ready: {order['status']} {(order.get('payment') or {}).get('failure_code')}")

        # The buyer at KakaoPay (pgsim auto-approve answers 302 to our approval URL).
        with self.client.get(redirect, name="GET pgsim /buyer/{tid} [auto-approve]",
                             allow_redirects=False, catch_response=True) as r:
            location = r.headers.get("location") if r.headers else None
            if r.status_code != 302 or not location or "pg_token=" not in location:
                r.failure(f"{error_of(r)} (expected 302 to the approval URL)")
                raise StepFailed("buyer page did not redirect")
            r.success()

        t_approve = time.time()
        with self.client.get(location, name="GET /api/payments/kakaopay/approve/{token}",
                             allow_redirects=False, catch_response=True) as r:
            if r.status_code != 303:
                r.failure(error_of(r))
                raise StepFailed(f"approve redirect: {error_of(r)}")
            r.success()

        order = self.wait_past(oid, "approving", "GET /api/orders/{id}?wait=5 [until paid]")
        if order["status"] != "paid":
            raise StepFailed(f"after approve: {order['status']} {(order.get('payment') or {}).get('failure_code')}")
        now = time.time()
        fire(self.environment, "FLOW", "approve→paid", (now - t_approve) * 1000)
        fire(self.environment, "FLOW", "order→paid", (now - t0) * 1000)


class BillingMonitor(User):
    """The billing-day burst: after PV_BURST_DELAY_S of browsing, makes every active
    subscription with a SID due a minute ago and inserts the `subscriptions.sweep` row
    (bench-billing.sh's SQL), then reads pgsim's /__stats once a second and fires one
    BILLING event per new charge (response time = trigger -> seen). Stops the run
    PV_BURST_TAIL_S after the last charge."""
    fixed_count = 1
    wait_time = constant(1)

    def on_start(self):
        import urllib.request  # plain client: not part of the measured traffic
        self.urlopen = urllib.request.urlopen
        self.done = False
        TL.phase = "before"

    def ledger_size(self):
        with self.urlopen(f"{PGSIM_URL}/__stats", timeout=10) as resp:
            return json.load(resp)["ledger_entries"]

    def psql(self, sql):
        out = subprocess.run(os.environ["PV_PSQL"].split() + [os.environ["DATABASE_URL"], "-Atq",
                                                             "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    @task
    def burst(self):
        if self.done:
            gevent.sleep(1)
            return
        gevent.sleep(float(os.environ.get("PV_BURST_DELAY_S", "15")))
        base = self.ledger_size()
        # bench-billing.sh's fresh_run_db, for every active subscription with a SID
        due = int(self.psql(
            "with sel as (select id, now() - interval '1 minute' as at from subscriptions "
            "where status = 'active' and sid is not null), "
            "u as (update subscriptions s set next_charge_at = sel.at, "
            "due_on = (sel.at at time zone 'Asia/Seoul')::date, "
            "last_charged_at = sel.at - make_interval(days => s.period_days), schedule_seq = 0 "
            "from sel where s.id = sel.id returning 1) select count(*) from u"))
        subs = int(self.psql("select count(*) from subscriptions where status in ('active', 'past_due') "
                             "and next_charge_at <= now()"))
        # the trigger: the sweep row, with the wake-up an enqueue sends
        t0 = float(self.psql(
            "with ins as (insert into fang_tasks (metadata, task_type) values "
            f"('{{\"type\":\"subscriptions.sweep\",\"limit\":{subs + 1000}}}', 'common') returning created_at) "
            "select extract(epoch from created_at), pg_notify('pillivery_jobs', 'common') is not null "
            "from ins").split("|")[0])
        TL.phase = "burst"
        info = {"trigger_epoch": t0, "made_due": due, "due": subs, "ledger_before": base}
        seen = 0
        timeout = float(os.environ.get("PV_BURST_TIMEOUT_S", "540"))
        while seen < subs and time.time() - t0 < timeout:
            gevent.sleep(1)
            try:
                n = self.ledger_size() - base
            except OSError as e:
                fire(self.environment, "BILLING", "pgsim /__stats", 0, e)
                continue
            ms = (time.time() - t0) * 1000
            for _ in range(max(0, n - seen)):
                fire(self.environment, "BILLING", "charges", ms)
            seen = max(seen, n)
        info.update({"charged_seen": seen, "drain_seen_s": round(time.time() - t0, 1),
                     "complete": seen >= subs})
        with open(os.path.join(WORK_DIR, ".pv_burst.json"), "w", encoding="utf-8") as f:
            json.dump(info, f)
        TL.phase = "after"
        gevent.sleep(float(os.environ.get("PV_BURST_TAIL_S", "10")))
        self.done = True
        runner = self.environment.runner
        gevent.spawn_later(0.1, runner.quit)
