"""The lender's pricing policy: bands to amount and rate; a malformed file is refused naming the field."""

from __future__ import annotations

import pytest

from fedcore.errors import ConfigError
from fedcore.protocol.preapproval.messages import Product
from party_node.pricing import load_policy, parse_policy

GOOD = """
[policy]
decline_if_blacklisted = true
max_active_loans = 2
valid_minutes = 15

[products.car_loan]
min_amount = 20000
max_term_months = 60
[[products.car_loan.bands]]
max_pd = 0.03
rate = 0.05
max_amount = 400000
[[products.car_loan.bands]]
max_pd = 0.08
rate = 0.07
max_amount = 100000
"""


def test_bands_decide_amount_and_rate(tmp_path):
    (tmp_path / "pricing.toml").write_text(GOOD)
    pol = load_policy(tmp_path)
    car = Product("car_loan", 150_000.0, 36)
    q = pol.decide(car, 0.02, 0, 0)
    assert (q.amount, q.rate, q.valid_s) == (150_000.0, 0.05, 900)  # the steady viewer: 5%
    q = pol.decide(car, 0.05, 0, 0)
    assert (q.amount, q.rate) == (100_000.0, 0.07)  # riskier: 7% and a capped amount
    assert pol.decide(car, 0.2, 0, 0) is None  # above the last band
    assert pol.decide(car, 0.02, 1, 0) is None  # on a member's fraud list
    assert pol.decide(car, 0.02, 0, 3) is None  # too many loans elsewhere
    assert pol.decide(Product("car_loan", 10_000.0), 0.02, 0, 0) is None  # below min_amount
    assert pol.decide(Product("car_loan", 50_000.0, 72), 0.02, 0, 0) is None  # term too long
    assert pol.decide(Product("mortgage", 50_000.0), 0.02, 0, 0) is None  # not offered here
    assert load_policy(tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("rate = 0.07", "rate = 1.7"), "products.car_loan.bands[1].rate"),
        (("rate = 0.05", 'rate = "low"'), "products.car_loan.bands[0].rate"),
        (("max_pd = 0.08", "max_pd = 0.01"), "products.car_loan.bands[1].max_pd"),
        (("max_amount = 100000\n", ""), "products.car_loan.bands[1].max_amount"),
        (("valid_minutes = 15", "valid_minutes = 0"), "policy.valid_minutes"),
        (("max_active_loans = 2", "max_loans = 2"), "policy.max_loans"),
        (("decline_if_blacklisted = true", "decline_if_blacklisted = 1"), "policy.decline_if_blacklisted"),
        (("decline_if_blacklisted = true", 'decline_if_blacklisted = true\nprefetch = "yes"'), "policy.prefetch"),
        (("min_amount = 20000", "min_amount = -1"), "products.car_loan.min_amount"),
        (("[products.car_loan]", "[products.Car-Loan]"), "products.Car-Loan"),
    ],
)
def test_malformed_policy_names_the_field(tmp_path, edit, field):
    (tmp_path / "pricing.toml").write_text(GOOD.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_policy(tmp_path)
    assert str(tmp_path / "pricing.toml") in str(err.value) and field in str(err.value)


def test_not_toml_and_no_products(tmp_path):
    (tmp_path / "pricing.toml").write_text("[policy\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(tmp_path)
    with pytest.raises(ConfigError, match="products"):
        parse_policy({"policy": {}})


def test_lender_handler_validates_at_start_and_rereads_an_edited_policy(tmp_path):
    import os

    from fedcore.errors import NotFound
    from fedcore.protocol.preapproval.messages import OFFER
    from fedcore.protocol.tasks import HandlerRegistry, TaskContext
    from party_node.preapproval import register_preapproval_handlers

    (tmp_path / "pricing.toml").write_text(GOOD.replace("rate = 0.07", "rate = 3"))
    with pytest.raises(ConfigError, match=r"bands\[1\]\.rate"):
        register_preapproval_handlers(HandlerRegistry(), tmp_path, lambda: None)
    (tmp_path / "pricing.toml").unlink()
    reg = HandlerRegistry()
    register_preapproval_handlers(reg, tmp_path, lambda: None)  # no policy yet: registered, answers not_found

    def call() -> object:
        ctx = TaskContext(party="l", task_id="t", kind=OFFER, run_id="r", deadline=1e18, payload=iter([b"p" * 16]))
        return reg.get(OFFER)(ctx, {"request_id": "r", "product": {"kind": "mortgage", "amount": 1000.0}})

    with pytest.raises(NotFound, match="pricing policy"):
        call()
    (tmp_path / "pricing.toml").write_text(GOOD)
    st = (tmp_path / "pricing.toml").stat()
    os.utime(tmp_path / "pricing.toml", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    reply = call()  # the new policy is read; it does not offer mortgages: declined without scoring
    assert reply.params == {"decision": "decline"}
