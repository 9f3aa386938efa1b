"""`afrocomet predict`, `evaluate`, `export` and `bench`: use and measure a saved classifier."""

from __future__ import annotations

import json
from pathlib import Path

import click

from afrocomet.cli.options import languages_or_default, split_commas
from afrocomet.cli.table import print_table
from afrocomet.errors import AfroCometError
from afrocomet.quantize import INT8_MODES

_ONNX_FILE_HELP = ("Run this ONNX file of the folder with ONNX Runtime, e.g. model.int8.onnx (an exported "
                   "folder runs its model.onnx by default).")


def _metrics_line(m: dict) -> str:
    return (f"weighted F1 {100 * m['weighted_f1']:.2f}%, accuracy {100 * m['accuracy']:.2f}%, "
            f"macro F1 {100 * m['macro_f1']:.2f}% on {m['n']} labelled texts")


@click.command("predict")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Saved classifier folder (config.json, model.safetensors, tokenizer), e.g. runs/afrocomet/student.")
@click.option("--input", "input_file", required=True, help="TSV with a tweet/text column [+ label, ID]; '-' for stdin.")
@click.option("--output", "output_file", required=True, help="TSV to write (ID<TAB>label); '-' for stdout.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Tokens per text; longer texts are truncated. Default: the model's limit, at most 512.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with the model folder to run.")
@click.option("--onnx-file", default=None, help=_ONNX_FILE_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: the free cores, from the load average).")
def predict(model_dir, input_file, output_file, batch_size, max_length, device, trust_remote_code, onnx_file,
            threads) -> None:
    """Label a TSV file with a saved classifier (streamed: any file size); scores it if it has labels."""
    from afrocomet.device import choose_threads, torch_threads
    from afrocomet.predict import predict_file

    with torch_threads(choose_threads(threads)):  # torch and ONNX Runtime alike
        result = predict_file(model_dir, input_file, output_file, batch_size=batch_size, max_length=max_length,
                              device=device, trust_remote_code=trust_remote_code, onnx_file=onnx_file)
    where = "" if output_file == "-" else f" -> {output_file}"
    click.echo(f"predicted {result['n']} texts, {result['truncated']} truncated "
               f"(max length {result['max_length']}){where}", err=True)
    if result["metrics"] is not None:
        click.echo(_metrics_line(result["metrics"]), err=True)


@click.command("evaluate")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="Saved classifier folder.")
@click.option("--languages", "-l", multiple=True, help="AfriSenti languages (default hau ibo kin swa yor).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder; default $AFROCOMET_DATA, then the cache, then download.")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="test", show_default=True)
@click.option("--test", "test_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Your own labelled TSV instead of AfriSenti.")
@click.option("--no-download", is_flag=True, help="Never download AfriSenti; fail if it is not found.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Default: the model's limit, at most 512.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the metrics as JSON.")
@click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with the model folder to run.")
@click.option("--onnx-file", default=None, help=_ONNX_FILE_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: the free cores, from the load average).")
def evaluate(model_dir, languages, data_dir, split, test_file, no_download, batch_size, max_length, device, out,
             trust_remote_code, onnx_file, threads) -> None:
    """Score a saved classifier on AfriSenti (per language and average) or on your own test file."""
    from afrocomet.data.download import data_files_in_use
    from afrocomet.device import choose_threads, torch_threads
    from afrocomet.io import atomic_write_json
    from afrocomet.outputs import check_output_file
    from afrocomet.predict import evaluate_model

    if out is not None:  # before the model is run: an output that cannot be written fails now
        data = data_files_in_use(data_dir) if test_file is None else []
        check_output_file(out, [("test file", test_file), ("model folder", model_dir), *data])
    with torch_threads(choose_threads(threads)):  # torch and ONNX Runtime alike
        result = evaluate_model(model_dir, languages=languages_or_default(languages), data_dir=data_dir, split=split,
                                test=test_file, batch_size=batch_size, max_length=max_length, device=device,
                                download=not no_download, trust_remote_code=trust_remote_code, onnx_file=onnx_file)
    keys = ("accuracy", "weighted_f1", "macro_f1")
    rows = [[name, m["n"], *(f"{100 * m[k]:.2f}" for k in keys), m["truncated"]]
            for name, m in result["languages"].items()]
    rows.append(["average", sum(m["n"] for m in result["languages"].values()),
                 *(f"{100 * result['average'][k]:.2f}" for k in keys), ""])
    on = result["test"] or f"AfriSenti {split}"
    print_table(f"{model_dir} on {on} (%)", ["language", "n", "accuracy", "weighted F1", "macro F1", "truncated"],
                rows)
    if out is not None:
        atomic_write_json(out, result)
        click.echo(f"wrote {out}")


@click.command("export")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Saved classifier folder (config.json, model.safetensors, tokenizer), e.g. runs/afrocomet/student.")
@click.option("--onnx", is_flag=True, help="Export to ONNX (model.onnx, fp32); the only format for now.")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (int8 quantisation); needs --onnx.")
@click.option("--int8-mode", type=click.Choice(INT8_MODES), default="static", show_default=True,
              help="static: scales calibrated on training tweets, a text's label never depends on its batch; "
                   "dynamic: scales from each batch at run time.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (new, or an earlier export).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder for the parity texts (test split); default $AFROCOMET_DATA, then the cache.")
@click.option("--languages", "-l", multiple=True, help="AfriSenti languages whose test tweets check parity.")
@click.option("--texts", "texts_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check parity on this TSV (tweet/text column) instead of AfriSenti.")
@click.option("--max-texts", type=click.IntRange(min=1), default=None, help="Check parity on at most N texts.")
@click.option("--opset", type=click.IntRange(min=14), default=17, show_default=True, help="ONNX opset.")
@click.option("--max-length", type=click.IntRange(min=2), default=None, help="Tokens per parity text (default: the model's limit).")
def export(model_dir, onnx, int8, int8_mode, out, data_dir, languages, texts_file, max_texts, opset, max_length) -> None:
    """Export a saved classifier to ONNX (and int8), with parity against PyTorch checked and saved."""
    from afrocomet.export import export_onnx

    if not onnx:
        raise AfroCometError("choose an export format: --onnx (int8 with --onnx --int8)")
    result = export_onnx(model_dir, out, int8=int8, int8_mode=int8_mode, opset=opset, data_dir=data_dir, texts=texts_file,
                         languages=languages_or_default(languages), max_texts=max_texts, max_length=max_length)
    fp32 = result["fp32"]
    click.echo(f"fp32 {fp32['file']}: max |logit diff| vs PyTorch {fp32['max_abs_logit_diff']:.2e} on "
               f"{fp32['n']} texts ({result['texts']['source']})")
    if "int8" in result:
        q = result["int8"]
        click.echo(f"int8 {q['file']} ({q['mode']}): label agreement with PyTorch {100 * q['label_agreement']:.2f}% "
                   f"(goal {100 * q['goal']:.0f}%){'' if q['ok'] else ' -- BELOW THE GOAL, ok: false'}")
    click.echo(f"wrote {out}/ (model.onnx{', model.int8.onnx' if int8 else ''}, config.json, tokenizer, parity.json)")


@click.command("bench")
@click.option("--teacher", default="afroxlmr-large", show_default=True,
              help="Preset (random weights, e.g. afroxlmr-large) or saved classifier folder.")
@click.option("--student", default="comet", show_default=True, help="Preset (e.g. comet) or saved classifier folder.")
@click.option("--onnx", "onnx_dir", type=click.Path(path_type=Path), default=None,
              help="Exported ONNX folder: adds columns onnx-fp32 and onnx-TAG for each model.TAG.onnx (e.g. onnx-int8).")
@click.option("--texts", "n_texts", type=click.IntRange(min=1), default=200, show_default=True,
              help="Real AfriSenti test tweets to time (drawn with seed 0).")
@click.option("--languages", "-l", multiple=True, help="AfriSenti languages of the tweets (default: the five).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder; default $AFROCOMET_DATA, then the cache, then download.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda ... (ONNX columns run on the CPU).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: the free cores, from the load average).")
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per text at most.")
@click.option("--compile", "compile_", is_flag=True,
              help="Also time both models through torch.compile (fp32; columns teacher-compiled, student-compiled).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of a table.")
def bench(teacher, student, onnx_dir, n_texts, languages, data_dir, device, threads, max_length, compile_,
          as_json) -> None:
    """Teacher vs student (vs ONNX): size, latency, throughput and memory on real tweets, with ratios."""
    from afrocomet.bench import bench_rows, bench_title, run_bench

    result = run_bench(teacher, student, onnx_dir, languages=split_commas(languages) or None, data_dir=data_dir,
                       n_texts=n_texts, device=device, threads=threads, max_length=max_length, compile=compile_)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    header, rows = bench_rows(result)
    print_table(bench_title(result), header, rows)
    click.echo(f"ratios: teacher / column (throughput: column / teacher). texts: {result['texts']['source']}; "
               f"tokenizer: {result['tokenizer']}")
    if "ratios_compiled" in result:
        r = result["ratios_compiled"]
        click.echo(f"compiled vs compiled: student {r['latency']:.1f}x faster p50, {r['throughput']:.1f}x throughput")
