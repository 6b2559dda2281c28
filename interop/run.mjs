// Run an ONNX model with onnxruntime-node and print its first output as JSON.
//
//   node interop/run.mjs MODEL.onnx INPUT.json
//
// INPUT.json: {"dtype": "float32" | "float64", "shape": [...], "data": [...]} (row-major).
// Prints {"dims": [...], "data": [...]} on stdout; an error is one line on stderr and exit code 1.
import { readFileSync } from "node:fs";
import ort from "onnxruntime-node";

const ARRAYS = { float32: Float32Array, float64: Float64Array };

async function main() {
  const [model, inputPath] = process.argv.slice(2);
  if (!model || !inputPath) throw new Error("usage: node run.mjs MODEL.onnx INPUT.json");
  const input = JSON.parse(readFileSync(inputPath, "utf8"));
  const session = await ort.InferenceSession.create(model, { executionProviders: ["cpu"] });
  const data = ARRAYS[input.dtype].from(input.data);
  const feeds = { [session.inputNames[0]]: new ort.Tensor(input.dtype, data, input.shape) };
  const outputs = await session.run(feeds);
  const y = outputs[session.outputNames[0]];
  process.stdout.write(JSON.stringify({ dims: y.dims, data: Array.from(y.data) }) + "\n");
}

main().catch((error) => {
  process.stderr.write(`${error.message.split("\n")[0]}\n`);
  process.exit(1);
});
