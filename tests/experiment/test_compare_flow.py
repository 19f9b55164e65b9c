"""How often ``compare`` goes back to the data and model layers: the datasets are built once per call."""

import json

import freqkit.data
import freqkit.data.spec as data_spec
import freqkit.models.spec as model_spec
from freqkit.data.synthetic import ShapesDataset
from freqkit.experiment import Comparison, compare


def test_compare_builds_the_datasets_once_and_each_model_per_run(tmp_path, monkeypatch):
    builds, datasets, models = [], [], []
    real_build, real_init, real_model = data_spec.build_datasets, ShapesDataset.__init__, model_spec.build_model

    def counting_build(*args, **kwargs):
        builds.append(kwargs.get("splits", ("train", "val")))
        return real_build(*args, **kwargs)

    def counting_init(self, *args, **kwargs):
        datasets.append(kwargs.get("split", args[0] if args else "train"))
        real_init(self, *args, **kwargs)

    def counting_model(*args, **kwargs):
        models.append(args[0])
        return real_model(*args, **kwargs)

    monkeypatch.setattr(data_spec, "build_datasets", counting_build)
    monkeypatch.setattr(freqkit.data, "build_datasets", counting_build)
    monkeypatch.setattr(ShapesDataset, "__init__", counting_init)
    monkeypatch.setattr(model_spec, "build_model", counting_model)
    specs, seeds = ["vit_micro", "vit_micro+fdam"], (0, 1)
    res = compare(
        specs,
        data="shapes:size=32,train=8,val=4",
        steps=1,
        seeds=seeds,
        batch_size=4,
        analyze_images=2,
        out=str(tmp_path / "cmp"),
        progress=False,
    )
    assert set(res.summary) == set(specs)
    # one build of (train, val) for the whole comparison: preflight and every train call reuse it
    assert builds == [("train", "val")] and sorted(datasets) == ["train", "val"]
    # each spec is built once by the preflight and once per seed by its run
    assert sorted(models) == sorted(specs * (1 + len(seeds)))
    # the result-object convention: to_dict / to_json(path=None) / save + load / _repr_html_ with the figures inline
    text = res.to_json()
    assert isinstance(text, str) and json.loads(text) == json.loads(json.dumps(res.to_dict()))
    written = tmp_path / "again.json"
    assert res.to_json(written) == text and written.read_text().strip() == text
    loaded = Comparison.load(tmp_path / "cmp")
    assert loaded.summary == json.loads(text)["summary"] and loaded.runs == json.loads(text)["runs"]
    page = res._repr_html_()
    assert page.count("data:image/png;base64,") == len(res.plot()) and "vit_micro+fdam" in page
