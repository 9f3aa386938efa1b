"""Efficiency: size on disk, parameters, latency, throughput and peak memory; teacher vs student.

- `size`: parameters and bytes of a model, a saved folder or a weight file; bytes in memory.
- `timing`: the predictor interface (`predict(texts) -> logits`), latency and throughput.
- `memory`: peak memory of a call (CUDA tensors, or the process's resident set on Linux).
- `efficiency`: one model's measures and teacher vs student, the schema that `afrocomet bench
  --json` and the run's `results.json` share (see its docstring).
- `command`: `afrocomet bench`, presets or folders side by side on real tweets, and its table.

Results are plain dicts of numbers, ready for JSON.
"""

from afrocomet.bench.command import (
    bench_rows,
    bench_texts,
    bench_title,
    onnx_columns,
    random_weights_model,
    run_bench,
    shared_tokenizer,
)
from afrocomet.bench.efficiency import (
    MEASURES,
    benchmark,
    benchmark_model,
    benchmark_onnx,
    compare,
    compare_columns,
    ratios,
)
from afrocomet.bench.memory import peak_memory
from afrocomet.bench.size import model_size, non_embedding_parameters, weights_bytes
from afrocomet.bench.timing import (
    Predictor,
    compiled,
    interleaved_latency,
    latency,
    measure_latency,
    measure_throughput,
    throughput,
    torch_predictor,
)

__all__ = [
    "MEASURES", "Predictor", "bench_rows", "bench_texts", "bench_title", "benchmark", "benchmark_model",
    "benchmark_onnx", "compare", "compare_columns", "compiled", "interleaved_latency", "latency", "measure_latency",
    "measure_throughput", "model_size", "non_embedding_parameters", "onnx_columns", "peak_memory",
    "random_weights_model", "ratios", "run_bench", "shared_tokenizer", "throughput", "torch_predictor", "weights_bytes",
]
