import argparse

from tvface.data.cli import add_collect_parser


def test_collect_subcommands_parse():
    parser = argparse.ArgumentParser(prog="tvface")
    add_collect_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["collect", "run", "a.mp4", "frames/", "--root", "out", "--set", "data.min_face_size=60"])
    assert args.step == "run" and args.inputs == ["a.mp4", "frames/"] and args.set == ["data.min_face_size=60"]
    assert callable(args.func)
    for step in ("shots", "detect", "identity", "select", "export", "report"):
        assert parser.parse_args(["collect", step, "x"]).step == step
    assert parser.parse_args(["collect", "evaluate", "media"]).media == "media"
    assert parser.parse_args(["collect", "demo", "--out", "d"]).out == "d"
