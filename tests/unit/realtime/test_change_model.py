"""A joint model trained with the platform's derived change features (``snapshot derive --with
behaviour``, then an ordinary vertical run over real stores and CKKS) ranks the borrowers whose
behaviour is deteriorating higher than the same model trained on the platform's static behaviour alone,
on the synthetic federation's time series (``scripts/change_model.py``)."""

from __future__ import annotations

import numpy as np

from models.metrics import auc
from scripts.change_model import CHANGES, joint_logit, train_change_model
from scripts.synthetic import PLATFORM_DATASET, SynthConfig, generate
from scripts.synthetic_time import TimeConfig, generate_time

WEEK = 30  # the training date; the label: a default in the 13 weeks after it


def _ranking(tmp, fed, ts, with_changes: bool) -> tuple[float, float, str]:
    m = train_change_model(tmp, fed, ts, WEEK, with_changes=with_changes, epochs=6, lr=0.3, horizon_weeks=13,
                           static=["monthly_spend", "active_days_30"])
    try:
        p = fed.loans.drop_duplicates("person_id").set_index("person_id").loc[m.person, "pd_true"].to_numpy()
        z = joint_logit(m, fed, m.person, np.log(p / (1 - p)))
        onset = ts.onset_week[m.person]
        deteriorating = ((onset >= 0) & (onset <= WEEK - 2)).astype(int)  # visible by the training date
        assert deteriorating.sum() >= 15
        top = z >= np.quantile(z, 0.9)
        return auc(deteriorating, z), float(top[deteriorating == 1].mean()), m.platform.dataset
    finally:
        m.close()


def test_trained_change_features_rank_deteriorating_borrowers_higher(tmp_path):
    fed = generate(SynthConfig(people=6000, seed=3))
    ts = generate_time(fed, TimeConfig(seed=1, weeks=WEEK + 1, first_default_week=20))
    auc0, recall0, ds0 = _ranking(tmp_path / "static", fed, ts, with_changes=False)
    auc1, recall1, ds1 = _ranking(tmp_path / "changes", fed, ts, with_changes=True)
    # the platform's default training dataset: the derived one, which includes its static base
    assert (ds0, ds1) == (PLATFORM_DATASET, CHANGES)
    # measured on time-series seeds 1, 2, 5 (23-25 such borrowers): AUC 0.83-0.86 -> 0.97-0.98,
    # top-decile recall 0.48-0.57 -> 0.87-0.96
    assert auc1 > auc0 + 0.05, (auc0, auc1)
    assert recall1 > recall0 + 0.2, (recall0, recall1)
