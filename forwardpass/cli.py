"""The `forwardpass` command: build, check, run, serve, infer and demo.

A user mistake prints one line on stderr and exits 2; `check` exits 1 when a model is outside its
tolerance; nothing a user types should end in a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from forwardpass import __version__
from forwardpass.builder.export import export_file, export_to_repository
from forwardpass.builder.graph import (
    DEFAULT_OPSET,
    DTYPES,
    LAYOUTS,
    ExportOptions,
    build_model,
    default_name,
    serialize,
)
from forwardpass.builder.init import SCALES, initialize
from forwardpass.builder.npz import load_npz
from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import NetworkSpec, activation_names, parse_activations
from forwardpass.builder.trained import import_trained
from forwardpass.builder.tritonconfig import DEFAULT_MAX_BATCH_SIZE
from forwardpass.server.options import DEFAULT_GRPC_ADDRESS, DEFAULTS

from .arrays import read_array, write_array
from .credentials import read_token
from .dtypes import DTYPES as ALL_DTYPES
from .errors import ForwardpassError, InputError
from .layout import WEIGHTS_FILE
from .runtime import PROVIDERS, Runtime
from .tolerance import TOLERANCES
from .verify import DEFAULT_BATCHES, Verification, intended_weights, verify

DEFAULT_SIZES = (3, 4, 1)
DEMO_WEIGHTS = DEFAULTS.model_repository / "mlp_3_4_1" / "1" / WEIGHTS_FILE


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None, whose meaning the help text itself explains."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    warnings.showwarning = lambda message, *_args, **_kw: print(f"forwardpass: warning: {message}", file=sys.stderr)
    try:
        return args.handler(args)
    except ForwardpassError as exc:
        print(f"forwardpass {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def make_parser() -> argparse.ArgumentParser:
    """The argument parser, with every default shown in --help."""
    fmt = HelpFormatter
    parser = Parser(prog="forwardpass", description=__doc__.splitlines()[0], formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"forwardpass {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (provider chosen, files)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    build = sub.add_parser(
        "build",
        help="build a network and export it as ONNX",
        formatter_class=fmt,
        description="Build a network and export it as ONNX, with Triton's config.pbtxt.",
    )
    build.add_argument(
        "--sizes", type=_ints, default=None, help="layer sizes n0,n1,...,nL (default 3,4,1, or read from --weights)"
    )
    build.add_argument(
        "--activations",
        default=None,
        help=f"one for all layers or one per layer, of: {activation_names()}; e.g. "
        "relu,sigmoid or leaky_relu:0.2,identity (default: relu hidden, sigmoid output)",
    )
    build.add_argument("--init", choices=sorted(SCALES), default="he", help="weight initializer (b = 0)")
    build.add_argument("--seed", type=int, default=0, help="seed of the initializer")
    build.add_argument("--weights", type=Path, help=".npz with W1, b1, ... in the slides' shapes (replaces --init)")
    build.add_argument(
        "--from",
        dest="trained",
        type=Path,
        metavar="MODEL",
        help="a trained model: a fitted scikit-learn MLPClassifier/MLPRegressor (.pkl, .joblib) "
        "or a PyTorch nn.Sequential, whole or as a state dict (.pt, .pth). Pickles run code when "
        "loaded: use only files you trust (PyTorch files load with weights_only)",
    )
    build.add_argument("--layout", choices=LAYOUTS, default="rows", help="rows: x [batch, n0]; columns: X [n0, batch]")
    build.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="element type of x, W, b and y: "
        + ", ".join(f"{d.name} ({d.datatype} on the wire, {d.config} in config.pbtxt)" for d in ALL_DTYPES),
    )
    build.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 13 to the installed onnx's newest")
    build.add_argument(
        "--expose-hidden", action="store_true", help="also output every Z[l] and every A[l] but the last (which is y)"
    )
    build.add_argument("--name", help="model name (default mlp_<sizes>)")
    build.add_argument("--repository", type=Path, default=DEFAULTS.model_repository, help="model repository folder")
    build.add_argument(
        "--version", dest="model_version", type=int, help="version to write (default: the next one; 1 in a new folder)"
    )
    build.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="config.pbtxt max_batch_size (rows layout; columns writes 0)",
    )
    build.add_argument("--output", type=Path, help="write only this .onnx file, outside any repository")
    build.add_argument("--force", action="store_true", help="replace an existing version or file")
    build.set_defaults(handler=cmd_build)

    check = sub.add_parser(
        "check",
        help="check a model file against the NumPy oracle",
        formatter_class=fmt,
        description="Run the onnx checker, then random batches through onnxruntime and the "
        "oracle of the read-back weights and, where known, of the weights the file was built from; "
        "exit 0 within tolerance, 1 outside it.",
    )
    check.add_argument("file", type=Path)
    check.add_argument(
        "--weights",
        type=Path,
        metavar="FILE.npz",
        help="the .npz the file was built from (default: the weights.npz beside a repository's model.onnx)",
    )
    _provider_args(check)
    check.add_argument("--batches", type=_ints, default=DEFAULT_BATCHES, help="batch sizes to try")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    check.set_defaults(handler=cmd_check)

    run = sub.add_parser(
        "run",
        help="run a model on an input file, locally",
        formatter_class=fmt,
        description="Local inference, no server. Rows layout takes one example per row, columns "
        "layout one per column; values are cast to the model's dtype.",
    )
    run.add_argument("file", type=Path)
    run.add_argument("--input", type=Path, required=True, help="input .npy or .csv")
    run.add_argument("--output", type=Path, help="output .npy or .csv (default: CSV on stdout)")
    _provider_args(run)
    run.set_defaults(handler=cmd_run)

    show = sub.add_parser(
        "show",
        help="print a model's layers; --svg draws the network",
        formatter_class=fmt,
        description="Print the layers of a model file (sizes, activations, parameters, opset, "
        "layout, producer); --svg draws the network as the slides do.",
    )
    show.add_argument("file", type=Path)
    show.add_argument("--svg", type=Path, help="write a drawing of the network to this .svg file")
    show.set_defaults(handler=cmd_show)

    serve = sub.add_parser(
        "serve",
        help="serve a model repository over gRPC and HTTP/REST (Open Inference Protocol)",
        formatter_class=fmt,
        description="Serve every model in a Triton-layout repository over gRPC and HTTP/REST, speaking "
        "KServe V2 as Triton does (GRPCInferenceService and the V2 REST routes). Stops gracefully on SIGTERM.",
    )
    from forwardpass.server.options import add_arguments

    add_arguments(serve)
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    serve.set_defaults(handler=cmd_serve)

    infer = sub.add_parser(
        "infer",
        help="send a batch to a running server",
        formatter_class=fmt,
        description="Send the rows of a file to a server and print or write the answer; a file "
        "larger than the message limit goes in several requests.",
    )
    infer.add_argument(
        "--url",
        default=DEFAULT_GRPC_ADDRESS,
        help="server address: HOST:PORT for gRPC, http(s)://HOST:PORT for HTTP/REST",
    )
    infer.add_argument("--model", required=True, help="model name")
    infer.add_argument("--model-version", default="", help="version (default: the server's latest)")
    infer.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    infer.add_argument("--input", type=Path, required=True, help="input .npy or .csv")
    infer.add_argument("--output", type=Path, help="output .npy or .csv (default: CSV on stdout)")
    infer.add_argument("--tls", action="store_true", help="connect over TLS (implied by the --tls-* files)")
    infer.add_argument(
        "--tls-ca", type=Path, help="PEM CA that signed the server's certificate (default: system roots)"
    )
    infer.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mutual TLS")
    infer.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    infer.add_argument("--auth-token-file", type=Path, help="send 'authorization: Bearer <token in this file>'")
    infer.add_argument(
        "--json", action="store_true", help="HTTP only: send and ask for JSON instead of binary tensor data"
    )
    infer.set_defaults(handler=cmd_infer)

    demo = sub.add_parser(
        "demo", help="build the 3-4-1 network and print onnxruntime beside the oracle", formatter_class=fmt
    )
    demo.add_argument("--weights", type=Path, default=DEMO_WEIGHTS, help="weights .npz (seeded he if absent)")
    demo.add_argument("--batch", type=int, default=5, help="examples to run")
    _provider_args(demo)
    demo.set_defaults(handler=cmd_demo)

    web = sub.add_parser(
        "web-runtime",
        help="fetch onnxruntime-web for the page `serve` shows at /, and Swagger UI for /docs (needs npm)",
        formatter_class=fmt,
        description="Install the onnxruntime-web version forwardpass pins (its npm lock file, integrity "
        "checked) and keep the three files of its wasm backend and its licence, where `serve` finds them; "
        "then Swagger UI (swagger-ui-dist, pinned the same way) for the page at /docs.",
    )
    web.add_argument("--dir", type=Path, help="where to put onnxruntime-web (default: the user's cache folder)")
    web.add_argument("--swagger-ui-dir", type=Path, help="where to put Swagger UI (default: the user's cache folder)")
    web.set_defaults(handler=cmd_web_runtime)
    return parser


def cmd_build(args: argparse.Namespace) -> int:
    """forwardpass build."""
    spec = _spec(args)
    spec.warn_if_saturating()
    options = ExportOptions(args.layout, args.dtype, args.opset, args.expose_hidden)
    name = args.name or default_name(spec)
    if args.output:
        if args.model_version is not None:
            raise InputError("--version applies to a repository; leave it out with --output")
        written = export_file(spec, options, args.output, args.force, name)
    else:
        written = export_to_repository(
            spec, options, args.repository, name, args.model_version, args.force, args.max_batch_size
        )
    for path in (written.model, written.config, written.weights):
        if path is not None:
            print(path)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """forwardpass check FILE."""
    if any(m < 1 for m in args.batches):
        raise InputError(f"batch sizes must be positive, got {list(args.batches)}")
    weights = intended_weights(args.file, args.weights)
    result = verify(args.file, args.provider, args.tf32, args.batches, args.seed, weights)
    m = result.model
    sizes = "-".join(str(n) for n in m.spec.sizes)
    acts = ",".join(str(a) for a in m.spec.activations)
    print(f"{args.file}: {sizes} {acts}, {m.layout} layout, {m.dtype}, opset {m.opset}: onnx checker passed")
    tolerance = TOLERANCES[result.mode]
    print(f"provider: {result.provider}; tolerance: {result.mode}, u = {tolerance.unit:.3g} ({tolerance.reason})")
    if weights:
        print(f"weights: {weights} ({'given with --weights' if args.weights else 'beside the model'})")
    else:
        print("weights: none known; the file is compared with its own weights only")
    print(
        "errors: each output's error as a share of its own error bound, as the page shows it (100% is the "
        "limit); the relative error is |error| / |oracle's y|, large where y is near 0"
    )
    for batch, c in result.results.items():
        verdict = "within" if c.ok else "OUTSIDE"
        print(
            f"batch {batch}: worst error: {percent_of_bound(c.worst)} of the {result.mode} bound, {verdict} "
            f"tolerance (max abs error {c.max_abs:.3g}, max rel error {c.max_rel:.3g} relative to |oracle's y|)"
        )
    if weights:
        print(_against_weights_line(result))
    failures = []
    if not result.runtime_ok:
        failures.append("onnxruntime disagrees with the oracle")
    if not result.weights_ok:
        failures.append(f"the file does not compute the weights in {weights}")
    print("FAILED: " + "; ".join(failures) if failures else "ok")
    return 1 if failures else 0


def _against_weights_line(result: Verification) -> str:
    """Every batch against the oracle of the intended weights, in one line: the worst, and where it failed."""
    comparisons = result.against_weights
    max_abs = max(c.max_abs for c in comparisons.values())
    worst = max(c.worst for c in comparisons.values())
    outside = [str(batch) for batch, c in comparisons.items() if not c.ok]
    verdict = f"OUTSIDE tolerance in batch {', '.join(outside)}" if outside else "the file computes these weights"
    bound = f"{percent_of_bound(worst)} of the {result.mode} bound"
    return f"against the weights: worst error: {bound} (max abs error {max_abs:.3g}); {verdict}"


def percent_of_bound(share: float) -> str:
    """A share of the error bound (Comparison.worst: |error| / bound) as the page writes it: a
    percentage to 2 significant digits (web/page.js, toPrecision(2))."""
    percent = 100 * share
    if not np.isfinite(percent):
        return "∞%"
    return f"{percent:.2g}%" if percent < 100 else f"{percent:.0f}%"


def cmd_run(args: argparse.Namespace) -> int:
    """forwardpass run FILE --input ..."""
    runtime = Runtime(args.file, provider=args.provider, tf32=args.tf32)
    x = read_array(args.input)
    write_array(runtime.predict(x.astype(runtime.dtype, copy=False)), args.output)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """forwardpass show FILE."""
    from .show import layer_table, network_svg

    model = read_file(args.file)
    print(layer_table(model))
    if args.svg:
        if args.svg.suffix != ".svg":
            raise InputError(f"{args.svg}: the drawing is SVG; name the file .svg")
        args.svg.write_text(network_svg(model.spec))
        print(f"drawing: {args.svg}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """forwardpass serve."""
    from forwardpass.server.options import from_arguments
    from forwardpass.server.workers import serve

    logging.getLogger().setLevel(args.log_level.upper())
    return serve(from_arguments(args))


def cmd_infer(args: argparse.Namespace) -> int:
    """forwardpass infer."""
    from .client import HTTP_SCHEMES, Client, WrongProtocol

    token = read_token(args.auth_token_file) if args.auth_token_file else None
    tls = dict(tls=args.tls, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key)
    # The client refuses --json with a gRPC URL before any file is read or any connection made.
    with Client(args.url, timeout=args.timeout, token=token, binary=not args.json, **tls) as client:
        try:
            y = client.infer(args.model, read_array(args.input), args.model_version)
        except WrongProtocol as exc:
            speaks = "an HTTP/REST" if exc.url.startswith(HTTP_SCHEMES) else "a gRPC"
            raise InputError(f"{args.url} is {speaks} port; use --url {exc.url}") from None
        write_array(y, args.output)
    return 0


def cmd_web_runtime(args: argparse.Namespace) -> int:
    """forwardpass web-runtime: onnxruntime-web's wasm backend for the page, and Swagger UI for /docs."""
    from forwardpass.web import ORT, SWAGGER, install

    for fetched, where in ((ORT, args.dir), (SWAGGER, args.swagger_ui_dir)):
        print(f"{fetched.package} {fetched.version}: {install(where, fetched)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """forwardpass demo: the 3-4-1 network in onnxruntime beside the slides' equations."""
    if args.batch < 1:
        raise InputError(f"--batch must be positive, got {args.batch}")
    if args.weights.exists():
        spec, source = load_npz(args.weights), str(args.weights)
    else:
        spec, source = initialize(DEFAULT_SIZES, parse_activations(None, 2), "he", 0), "he init, seed 0"
    runtime = Runtime(serialize(build_model(spec)), provider=args.provider, tf32=args.tf32)
    x = np.random.default_rng(0).standard_normal((args.batch, spec.sizes[0])).astype(np.float32)
    y = runtime.predict(x)
    oracle = forward(spec, x.T.astype(np.float64)).output.T
    print(
        f"network {'-'.join(map(str, spec.sizes))}, activations {','.join(map(str, spec.activations))}, "
        f"weights from {source}; onnxruntime on {runtime.provider}"
    )
    print(f"{'x':>32}  {'onnxruntime y':>14}  {'oracle y':>14}  {'|difference|':>12}")
    for row, got, want in zip(x, y[:, 0], oracle[:, 0]):
        shown = np.array2string(row, precision=4, floatmode="fixed")
        print(f"{shown:>32}  {got:14.8f}  {want:14.8f}  {abs(got - want):12.3g}")
    return 0


def _spec(args: argparse.Namespace) -> NetworkSpec:
    if args.trained and args.weights:
        raise InputError("--from and --weights both give weights; use one")
    if args.trained:
        spec = import_trained(args.trained, args.activations)
        if args.sizes is not None and tuple(args.sizes) != spec.sizes:
            raise InputError(f"--sizes {list(args.sizes)} given, but {args.trained} has sizes {list(spec.sizes)}")
        return spec
    if args.weights:
        spec = load_npz(args.weights, sizes=args.sizes)
        if args.activations is None:
            return spec
        return NetworkSpec(spec.sizes, parse_activations(args.activations, spec.depth), spec.weights, spec.biases)
    sizes = args.sizes or DEFAULT_SIZES
    return initialize(sizes, parse_activations(args.activations, len(sizes) - 1), args.init, args.seed)


def _provider_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="auto",
        help="execution provider; auto takes CUDA when onnxruntime-gpu and a GPU are there",
    )
    parser.add_argument("--tf32", action="store_true", help="let CUDA compute Gemm in TF32 (faster, ~1e-3 error)")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
