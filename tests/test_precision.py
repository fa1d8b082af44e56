"""int8 models: `mobileface models quantize` (real models, real faces of ../shared), its gates and
reports, and how --precision auto|fp32|int8 chooses between the int8 and the float models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DATA, load_bgr
from mobileface.cli.main import main
from mobileface.errors import ModelError
from mobileface.models import precision, registry

LFW100 = DATA / "mobileface" / "LFW-Aligned-100Pair"
FR = DATA / "face_recognition"
PHOTOS = ["obama.jpg", "obama2.jpg", "biden.jpg", "two_people.jpg", "lin-manuel-miranda.png",
          "alex-lacamoire.png"]
VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AMX = frozenset({"avx2", "amx_int8", "amx_tile"})
AVX2_ONLY = frozenset({"sse4_2", "avx2", "fma"})


def _data_tree(root):
    """A small copy (links) of the shared data's layout: 9 calibration photos, 6 photos and
    friends.jpg to check on, 12 LFW people."""
    if not (LFW100.is_dir() and (FR / "knn_examples" / "train").is_dir()):
        pytest.skip("the shared face_recognition / LFW-Aligned-100Pair data is absent")
    (root / "face_recognition" / "knn_examples").mkdir(parents=True)
    (root / "face_recognition" / "knn_examples" / "train").symlink_to(FR / "knn_examples" / "train")
    for name in PHOTOS:
        (root / "face_recognition" / name).symlink_to(FR / name)
    (root / "mobileface" / "LFW-Aligned-100Pair").mkdir(parents=True)
    (root / "mobileface" / "friends.jpg").symlink_to(DATA / "mobileface" / "friends.jpg")
    for person in sorted(p for p in LFW100.iterdir() if p.is_dir())[:12]:
        (root / "mobileface" / "LFW-Aligned-100Pair" / person.name).symlink_to(person)
    return root


def _cache(folder, monkeypatch):
    """A private model cache holding links to the converted float embedder and its record."""
    from mobileface.convert.dlib_resnet import converted_model_path

    float_model = converted_model_path()
    folder.mkdir()
    for path in (float_model, registry.record_path(float_model)):
        (folder / path.name).symlink_to(path)
    monkeypatch.setenv("MOBILEFACE_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """`models quantize` of all three groups into a private cache, once for this module."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("quantize")
    data = _data_tree(root / "data")
    cache = _cache(root / "cache", mp)
    # the small set has 12 LFW pairs per kind and ~60 faces: one pair is 0.04 of accuracy,
    # one face 0.017 of agreement, so the bounds here are wider than the project's
    code = main(["-q", "models", "quantize", "--data", str(data), "--json",
                 "--max-loss", "0.1", "--min-gender-agreement", "0.9"])
    yield code, cache, data
    mp.undo()


@pytest.fixture
def in_cache(quantized, monkeypatch):
    monkeypatch.setenv("MOBILEFACE_CACHE", str(quantized[1]))
    return quantized[1]


def test_quantize_writes_int8_files_and_a_report_of_each_gate(quantized, in_cache, capsys):
    code, cache, data = quantized
    assert code == 0
    for group, names in precision.GROUPS.items():
        report = json.loads(precision.report_path(group).read_text())
        assert report["group"] == group and report["passed"] is True
        assert report["cpu"]["int8_flags"] == precision.int8_flags()
        assert report["data"] == str(data) and report["calibration"]
        for name in names:
            entry = report["models"][name]
            assert entry["source_sha256"] == registry.get_spec(name).sha256
            assert entry["int8_sha256"] == registry.sha256_file(precision.int8_path(name))
            assert precision.int8_path(name).parent == cache
        assert report["gates"] and all(g["passed"] for g in report["gates"])
        for g in report["gates"]:
            assert set(g) >= {"name", "measured", "bound", "passed"}
    gates = {g["name"]: g for group in precision.GROUPS
             for g in precision.read_report(group)["gates"]}
    detect = gates["detect: images with the same faces"]
    assert detect["images"] == 2 * (len(PHOTOS) + 1) + 2 * 0 and detect["matched_faces"] >= 20
    assert detect["median_iou"] > 0.9
    assert gates["attributes: gender agreement"]["faces"] >= 30
    assert 0 <= gates["attributes: median |age difference|, years"]["measured"] <= 1
    embed = gates["embed: 10-fold accuracy lost"]
    assert embed["accuracy_fp32"] > 0.7 and embed["images"] == 24
    assert gates["embed: mean cosine to fp32"]["measured"] > 0.99


def test_auto_picks_int8_only_on_vnni_or_amx(in_cache, monkeypatch):
    for flags, expected in ((VNNI, "int8"), (AMX, "int8"), (AVX2_ONLY, "fp32"),
                            (frozenset(), "fp32")):
        monkeypatch.setattr(precision, "cpu_flags", lambda path=None, f=flags: f)
        for group in precision.GROUPS:
            chosen, files, reason = precision.choose(group, "auto")
            assert chosen == expected, (flags, group, reason)
            assert bool(files) == (expected == "int8")
        assert precision.choose("embed", "fp32")[0] == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda path=None: VNNI)
    from mobileface import FaceAnalyzer

    auto = FaceAnalyzer(stages=("attributes", "embed"), precision="auto")
    assert auto.chosen_precision == {"detect": "int8", "attributes": "int8", "embed": "int8"}
    fp32 = FaceAnalyzer(stages=("attributes", "embed"), precision="fp32")
    assert set(fp32.chosen_precision.values()) == {"fp32"}
    a, b = auto.analyze(load_bgr("face_recognition/obama.jpg")), \
        fp32.analyze(load_bgr("face_recognition/obama.jpg"))
    assert len(a) == len(b) == 1
    assert a.embedding[0] @ b.embedding[0] / np.linalg.norm(a.embedding[0]) \
        / np.linalg.norm(b.embedding[0]) > 0.99
    assert not np.array_equal(a.embedding, b.embedding)      # another model ran
    assert abs(float(a.age[0]) - float(b.age[0])) < 3 and (a.gender > 0.5) == (b.gender > 0.5)


def test_auto_keeps_fp32_when_the_gate_ran_on_a_cpu_without_vnni(in_cache, monkeypatch):
    path = precision.report_path("attributes")
    saved = path.read_text()
    report = json.loads(saved)
    report["cpu"]["int8_flags"] = []
    path.write_text(json.dumps(report))
    monkeypatch.setattr(precision, "cpu_flags", lambda path=None: VNNI)
    try:
        chosen, _, reason = precision.choose("attributes", "auto")
        assert chosen == "fp32" and "without VNNI" in reason
    finally:
        path.write_text(saved)


def test_int8_embeddings_match_a_facebank_enrolled_at_fp32(in_cache, tmp_path):
    """The int8 embedder shares the float model's id (its gate proved them equivalent):
    a face enrolled at fp32 is recognised at int8."""
    from mobileface.identity.enrol import FaceEnroller
    from mobileface.identity.facebank import Facebank

    fp32 = FaceEnroller(precision="fp32")
    int8 = FaceEnroller(precision="int8")
    assert fp32.model_id == int8.model_id
    enrolled = fp32.embed_file(FR / "obama.jpg").embedding
    probe = int8.embed_file(FR / "obama2.jpg").embedding
    other = int8.embed_file(FR / "biden.jpg").embedding

    def cosine(x, y):
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    assert cosine(enrolled, probe) >= int8.threshold > cosine(enrolled, other)
    with Facebank(tmp_path / "bank") as bank:
        from mobileface.identity.store import Enrolment

        bank.add("obama", [Enrolment((FR / "obama.jpg").read_bytes(), ".jpg", "obama",
                                     enrolled, 0.9)], fp32.model_id)
        assert bank.models() == [int8.model_id]


def test_forced_int8_without_the_model_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    _cache(tmp_path / "empty", monkeypatch)
    photo = FR / "obama.jpg"
    if not photo.is_file():
        pytest.skip("shared face_recognition photos are absent")
    assert main(["analyze", str(photo), "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--precision int8" in err and "python -m mobileface models quantize" in err
    # the video app too
    from scripts import load_script

    clip = FR / "short_hamilton_clip.mp4"
    if clip.is_file():
        app = load_script("apps/infer_on_video.py")
        assert app.main(["-f", str(clip), "-d", "0.2", "--precision", "int8",
                         "--no-recognition"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "\n".join(err)
        assert any("--precision int8: no int8" in line and "models quantize" in line
                   for line in err)
    from mobileface import FaceAnalyzer

    with pytest.raises(ModelError, match="models quantize --models detect"):
        FaceAnalyzer(stages=(), precision="int8")
    # auto, without int8 models: the float models, no error
    analyzer = FaceAnalyzer(stages=("attributes",), precision="auto")
    assert set(analyzer.chosen_precision.values()) == {"fp32"}


def test_a_failed_gate_refuses_the_model(tmp_path, monkeypatch, capsys):
    data = _data_tree(tmp_path / "data")
    _cache(tmp_path / "cache", monkeypatch)
    # an absurd bound: the ages of int8 and float must agree exactly
    code = main(["-q", "models", "quantize", "--data", str(data), "--models", "attributes",
                 "--max-age-diff", "0"])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED" in out
    report = precision.read_report("attributes")
    assert report["passed"] is False
    failed = [g for g in report["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == ["attributes: median |age difference|, years"]
    assert failed[0]["measured"] > 0 and failed[0]["bound"] == "<= 0"
    with pytest.raises(ModelError, match="failed its accuracy gate"):
        precision.choose("attributes", "int8", VNNI)
    monkeypatch.setattr(precision, "cpu_flags", lambda path=None: VNNI)
    assert precision.choose("attributes", "auto")[0] == "fp32"
    # an int8 file that is not the one the report checked is refused as well
    precision.int8_path("age_v1").write_bytes(b"not the model")
    files, why, _ = precision.usable_int8("attributes")
    assert files is None and "sha256 differs" in why


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    flags = precision.cpu_flags(info)
    assert "avx512_vnni" in flags and precision.int8_flags(flags) == ["avx512_vnni"]
    assert precision.int8_flags(frozenset({"avx2"})) == []
    assert precision.cpu_flags(tmp_path / "absent") == frozenset()


def test_bad_precision_values_are_refused():
    from mobileface.pipeline.config import PipelineConfig

    with pytest.raises(ValueError, match="precision"):
        PipelineConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        precision.choose("detect", "int4")
    with pytest.raises(ValueError, match="model group"):
        precision.check_groups(["landmarks"])
    assert main(["models", "quantize", "--models", "pose"]) == 2


def test_a_damaged_report_is_fp32_for_auto_and_one_line_for_int8(in_cache, monkeypatch):
    path = precision.report_path("embed")
    saved = path.read_text()
    monkeypatch.setattr(precision, "cpu_flags", lambda path=None: VNNI)
    try:
        for text in ("{not json", json.dumps({**json.loads(saved), "models": [1]}),
                     json.dumps({**json.loads(saved), "gates": [{"name": "x"}]})):
            path.write_text(text)
            chosen, _, reason = precision.choose("embed", "auto")
            assert chosen == "fp32" and "models quantize --models embed" in reason
            with pytest.raises(ModelError, match="^--precision int8: ") as exc:
                precision.choose("embed", "int8")
            assert "\n" not in str(exc.value)
    finally:
        path.write_text(saved)
    assert precision.choose("embed", "auto")[0] == "int8"
