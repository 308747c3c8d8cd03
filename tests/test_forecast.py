"""fusedrnn.forecast: the pipeline, walk-forward folds, metrics, baselines, Diebold-Mariano,
and the Forecaster (fit / save / load with weights_only / predict / backtest)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import fusedrnn
from fusedrnn import data as D
from fusedrnn.forecast import Fold, Forecaster, Pipeline, fold_windows, walk_forward
from fusedrnn.forecast_eval import baselines, diebold_mariano, score, verdict
from fusedrnn.train import TrainConfig

TINY = TrainConfig(epochs=2, batch_size=64, patience=None, progress=False)


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    idx = pd.bdate_range("2021-01-04", periods=n, name="date")
    return pd.DataFrame({"close": close, "volume": 1000 + np.arange(n, dtype=float)}, index=idx)


# ---- pipeline -------------------------------------------------------------------------------


def test_price_pipeline_targets_inputs_and_inverse():
    f = _frame()
    p = Pipeline(window=5, horizon=3, features=["volume", "close"], target="price")
    assert p.features == ["close", "volume"]  # close first (the residual head reads feature 0)
    fd = fold_windows(p, f, Fold(0, 140, 170, 200))
    c = f["close"].to_numpy()
    assert fd.origins["train"][0] == 4 and fd.origins["train"][-1] == 140 - 1 - 3
    assert fd.origins["test"][0] == 169 and fd.origins["test"][-1] == 200 - 1 - 3
    x, y = fd.x("test"), fd.targets("test")
    assert x.shape == (len(fd.origins["test"]), 5, 2) and y.shape == (x.shape[0], 3)
    np.testing.assert_allclose(fd.to_prices(y, "test"), fd.actual("test"), rtol=1e-5)
    t = fd.origins["test"][0]
    np.testing.assert_allclose(fd.actual("test")[0], c[t + 1 : t + 4])
    # inputs end at the origin; scaled with the training rows' min/max only
    train_c = c[:140]
    np.testing.assert_allclose(
        x[0, -1, 0], (c[t] - train_c.min()) / (train_c.max() - train_c.min()), rtol=1e-5
    )


def test_log_return_targets_and_scaler_sees_the_training_rows_only():
    f = _frame()
    p = Pipeline(window=4, horizon=2, target="log-return")
    fd = fold_windows(p, f, Fold(0, 120, 160, 200))
    c = f["close"].to_numpy()
    t = fd.origins["val"][3]
    raw = (fd.y[t] - p.t_offset) / p.t_scale
    np.testing.assert_allclose(raw, np.log(c[t + 1 : t + 3] / c[t]), rtol=1e-9)
    np.testing.assert_allclose(fd.to_prices(fd.targets("val"), "val"), fd.actual("val"), rtol=1e-5)
    g = f.copy()
    g.iloc[120:, 0] *= 5  # change the future: nothing fitted may move
    q = Pipeline(window=4, horizon=2, target="log-return").fit(g, 0, 120)
    np.testing.assert_array_equal(q.in_scale, p.in_scale)
    np.testing.assert_array_equal(q.t_offset, p.t_offset)


def test_pipeline_errors_name_the_problem():
    with pytest.raises(ValueError, match="target"):
        Pipeline(target="level")
    with pytest.raises(ValueError, match="no column 'open'"):
        Pipeline(features="close,open").fit(_frame(), 0, 100)
    with pytest.raises(ValueError, match="too few rows"):
        fold_windows(Pipeline(window=36, horizon=5), _frame(60), Fold(0, 40, 50, 60))


def test_walk_forward_folds():
    (one,) = walk_forward(1000)
    assert (one.lo, one.val, one.test, one.end) == (0, 700, 850, 1000)  # the 70/15/15 split
    exp = walk_forward(1000, folds=3, test_fraction=0.3)
    assert [f.test for f in exp] == [700, 800, 900] and exp[-1].end == 1000
    assert all(f.lo == 0 for f in exp) and all(a.end == b.test for a, b in zip(exp, exp[1:]))
    sl = walk_forward(1000, folds=3, test_fraction=0.3, origin="sliding")
    assert [f.test - f.lo for f in sl] == [700, 700, 700] and [f.lo for f in sl] == [0, 100, 200]
    with pytest.raises(ValueError, match="origin"):
        walk_forward(100, origin="rolling")


# ---- metrics, baselines, Diebold-Mariano ---------------------------------------------------


def test_score_known_values():
    last = np.array([10.0, 10.0, 10.0, 10.0])
    actual = np.array([[11.0], [9.0], [12.0], [10.0]])
    pred = np.array([[10.5], [9.5], [9.0], [10.0]])
    m = score(pred, actual, last)
    assert m["mae"] == pytest.approx((0.5 + 0.5 + 3 + 0) / 4)
    assert m["mse"] == pytest.approx((0.25 + 0.25 + 9) / 4)
    assert m["mape"] == pytest.approx(100 * (0.5 / 11 + 0.5 / 9 + 3 / 12) / 4)
    assert m["direction"] == pytest.approx(100 * 2 / 3)  # up right, down right, up wrong
    assert score(np.repeat(last[:, None], 1, 1), actual, last)["direction"] is None  # naive


def test_baselines_known_values():
    close = np.arange(1.0, 21.0)  # 1..20
    b = baselines(close, [9, 12], horizon=2, season=5, ma=3)
    np.testing.assert_array_equal(b["naive"], [[10, 10], [13, 13]])
    # target t+h from t+h-5: t=9 -> rows 5, 6 (values 6, 7)
    np.testing.assert_array_equal(b["seasonal naive"], [[6, 7], [9, 10]])
    np.testing.assert_array_equal(b["moving average"], [[9, 9], [12, 12]])


def test_diebold_mariano_known_values():
    # d = e^2 = [1, 4, 0, 9, 1]: mean 3, lag-0 variance 54/25; DM = 3 / sqrt(2.16 / 5)...
    e = np.array([1.0, 2.0, 0.0, 3.0, 1.0])
    stat, p = diebold_mariano(e, np.zeros(5))
    hln = math.sqrt((5 + 1 - 2) / 5)
    assert stat == pytest.approx(hln * 3 / math.sqrt(10.8 / 5), rel=1e-12)  # 1.8257...
    # two-sided p from Student t with 4 df, in closed form: F(t) = 1/2 + t(t^2+6)/(2(t^2+4)^1.5)
    cdf = 0.5 + stat * (stat**2 + 6) / (2 * (stat**2 + 4) ** 1.5)
    assert p == pytest.approx(2 * (1 - cdf), rel=1e-9)  # 0.1419...
    assert diebold_mariano(np.zeros(5), e)[0] == pytest.approx(-stat)
    # horizon 2: d = [1,1,4,4,9,9,1,1], gamma0 = 10.6875, gamma1 = 3.6171875
    e2 = np.array([1.0, 1, 2, 2, 3, 3, 1, 1])
    stat2, _ = diebold_mariano(e2, np.zeros(8), horizon=2)
    var = (10.6875 + 2 * 3.6171875) / 8
    assert stat2 == pytest.approx(math.sqrt((8 + 1 - 4 + 2 / 8) / 8) * 3.75 / math.sqrt(var))
    with pytest.raises(ValueError, match="shapes"):
        diebold_mariano(np.zeros(4), np.zeros(5))


def test_verdict_wording_is_about_significance():
    naive = {"rmse": 1.0}
    line = verdict("LSTM/fused", {"rmse": 0.9997}, naive, (-0.4, 0.69))
    assert "0.9997x naive" in line and "not significantly different" in line
    assert "significantly better" in verdict("X", {"rmse": 0.8}, naive, (-3.0, 0.003))
    assert "significantly worse" in verdict("X", {"rmse": 1.3}, naive, (3.0, 0.003))


# ---- Forecaster ----------------------------------------------------------------------------


def test_forecaster_saves_one_weights_only_artefact_and_predicts_the_same(tmp_path):
    prices = D.load_prices("MSFT", "2y", "bundled")
    f = Forecaster("gru", window=8, horizon=3, hidden=6, layers=1, config=TINY).fit(prices)
    first = f.predict(prices)
    assert list(first.index.strftime("%Y-%m-%d")) == ["2013-03-04", "2013-03-05", "2013-03-06"]
    assert first.attrs["as_of"] == "2013-03-01" and list(first["horizon"]) == [1, 2, 3]
    path = tmp_path / "msft.pt"
    f.save(path)
    raw = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert raw["format"] == "fusedrnn.forecast/1"
    assert raw["pipeline"]["window"] == 8 and raw["pipeline"]["features"] == ["close"]
    assert raw["provenance"]["symbol"] == "MSFT" and raw["provenance"]["last_date"] == "2013-03-01"
    assert len(raw["pipeline"]["in_scale"]) == 1 and raw["model_config"]["output_size"] == 3
    again = Forecaster.load(path)
    pd.testing.assert_frame_equal(again.predict(prices), first)
    assert isinstance(again.model.rnn, fusedrnn.GRU)


def test_forecaster_backtest_folds_pooled_and_dm():
    f = Forecaster("rnn", window=5, horizon=2, hidden=4, layers=1, config=TINY)
    bt = f.backtest(_frame(260), folds=2, test_fraction=0.3)
    assert f.model is None  # a backtest does not fit the forecaster itself
    assert [x["fold"] for x in bt.folds] == [1, 2]
    names = {"RNN", "naive", "seasonal naive", "moving average", "linear AR"}
    assert set(bt.pooled()) == names and set(bt.folds[0]["metrics"]) == names
    assert bt.actual.shape == bt.preds["RNN"].shape and bt.actual.shape[1] == 2
    stat, p = bt.dm("RNN")
    assert 0 <= p <= 1 and math.isfinite(stat)
    s = bt.summary()
    assert set(s["dm_vs_naive"]) == names - {"naive"}
    assert "linear AR" in bt.table() and "DM p" in bt.table()


def test_forecaster_errors():
    with pytest.raises(RuntimeError, match="fit"):
        Forecaster().predict(_frame())
    with pytest.raises(ValueError, match="residual"):
        Forecaster(target="log-return", residual=True)
    f = Forecaster("gru", window=5, hidden=4, layers=1, config=TINY).fit(_frame(120))
    with pytest.raises(ValueError, match="needs the last 5"):
        f.predict(_frame(4))
    with pytest.raises(ValueError, match="no column 'volume'"):
        Forecaster("gru", window=5, features="close,volume", config=TINY).fit(
            _frame(120)[["close"]]
        )


@pytest.mark.parametrize(
    "content",
    [{"format": "fusedrnn.forecast/1"}, {"format": "fusedrnn.forecast/1", "pipeline": 3}],
)
def test_a_forecaster_file_with_the_tag_but_not_the_contents_is_refused(tmp_path, content):
    """A file with the format's tag but missing keys was a bare KeyError."""
    path = tmp_path / "partial.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match="not a complete fusedrnn forecaster"):
        Forecaster.load(path)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(window=2.5), "window"),
        (dict(horizon=1.9), "horizon"),
        (dict(layers=0), "layers"),
        (dict(hidden=0), "hidden"),
        (dict(dropout=1.5), "dropout"),
        (dict(cell="xyz"), "cell"),
    ],
)
def test_forecaster_settings_are_checked_at_construction(kw, name):
    """window=2.5 ran as 2 and horizon=1.9 as 1; the model's settings failed only at fit."""
    with pytest.raises(ValueError, match=name):
        Forecaster("lstm" if "cell" not in kw else kw.pop("cell"), **kw)


def test_a_frame_straight_from_read_csv_has_its_date_column_as_the_index(tmp_path):
    """``pd.read_csv`` of a price file keeps ``Date`` as a column of strings: the forecaster
    reads it as the dates (as ``--csv`` does), and predicts the same as from the dated frame;
    a column of text that is not the dates is named."""
    dated = _frame(120)
    path = tmp_path / "prices.csv"
    dated.rename_axis("Date").rename(columns={"close": "Close"}).to_csv(path)
    raw = pd.read_csv(path)
    assert not pd.api.types.is_numeric_dtype(raw["Date"])
    f = Forecaster("gru", window=5, horizon=2, hidden=4, layers=1, config=TINY)
    torch.manual_seed(0)
    from_raw = f.fit(raw).predict(raw)
    torch.manual_seed(0)
    from_dated = f.fit(dated).predict(dated)
    pd.testing.assert_frame_equal(from_raw, from_dated)
    assert list(from_raw.index.strftime("%Y-%m-%d")) == ["2021-06-21", "2021-06-22"]
    with pytest.raises(ValueError, match=r"\['note'\] are not numbers"):
        f.fit(dated.assign(note="x"))
    with pytest.raises(ValueError, match="'date' does not hold dates"):
        f.fit(raw.assign(Date="soon"))
