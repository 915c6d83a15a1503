package quantize

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
)

// writeCard writes the README.md model card of a quantized bundle: what
// it is, how it was made (provenance) and, once measured, its quality.
func writeCard(dir string, res *Result, src, out *config.Config) error {
	var b strings.Builder
	name := filepath.Base(filepath.Clean(res.Source))
	fmt.Fprintf(&b, "---\nbase_model: %s\nlibrary_name: streamguard\ntags:\n- qwen3guard-stream\n- awq\n- int4\n- safety\n---\n\n", yamlString(name))
	fmt.Fprintf(&b, "# %s — AWQ INT4 (w4 g%d, GEMM)\n\n", name, res.Group)
	fmt.Fprintf(&b, "A 4-bit quantization of the Qwen3Guard-Stream checkpoint `%s`, written by `streamguard quantize`. "+
		"The decoder Linears are AutoAWQ GEMM tensors (`qweight`, `qzeros`, `scales`); the embedding and norms are fp16; "+
		"**the 8 guard heads are kept in the source precision** and listed in `quantization_config.modules_to_not_convert`, "+
		"so a loader that knows Qwen3ForGuardModel keeps its classifier.\n\n", res.Source)
	b.WriteString("| | |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("architecture", strings.Join(out.Architectures, ", "))
	row("source dtype", orDash(src.TorchDtype))
	row("layers / hidden", fmt.Sprintf("%d / %d", src.NumHiddenLayers, src.HiddenSize))
	row("method", string(res.Method))
	row("bits / group / zero point", fmt.Sprintf("4 / %d / yes", res.Group))
	row("rounding", "half to even, fp16 scales")
	if res.Method == AWQ {
		row("scale search", fmt.Sprintf("20-point grid, duo scaling, scored with the %s kernels on %d tokens", res.SearchKernel, res.SearchTokens))
		row("clipping search", "max-shrink 0.5 in 10 steps, all Linears but q_proj/k_proj")
		row("calibration", fmt.Sprintf("%s; %d sequences × %d tokens (%d tokens), seed %d", res.Calibration, res.Samples, res.SeqLen, res.CalibTokens, res.Seed))
	}
	row("heads kept", "`"+strings.Join(checkpoint.HeadModules(), "`, `")+"`")
	fmt.Fprintf(&b, "| quantized in | %.1f s |\n", res.QuantizeSeconds)
	b.WriteString("\n")
	if q := res.Quality; q != nil {
		fmt.Fprintf(&b, "## Quality against the source\n\nHeld-out conversations: %d (%d positions). Agreement is the share of positions whose argmax label matches the source; verdict positions are the prompt's closing `<|im_end|>` (query heads) and the response tokens (response heads).\n\n", q.Conversations, q.Positions)
		b.WriteString("| head | agreement | at verdicts | KL mean (nats) | KL max |\n|---|---|---|---|---|\n")
		for _, h := range q.Heads {
			fmt.Fprintf(&b, "| %s | %.1f%% | %.1f%% (%d) | %.2e | %.2e |\n", h.Head, 100*h.Agreement, 100*h.VerdictAgreement, h.VerdictPositions, h.KLMean, h.KLMax)
		}
		fmt.Fprintf(&b, "\nRelative error of the final hidden state: mean %.4f, max %.4f.\n\n", q.HiddenRelErrMean, q.HiddenRelErrMax)
	}
	b.WriteString("## Use\n\n```\nstreamguard verify DIR\nstreamguard moderate --model DIR --prompt \"...\" --response \"...\"\n```\n")
	return os.WriteFile(filepath.Join(dir, "README.md"), []byte(b.String()), 0o644)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// yamlString quotes s for the front matter.
func yamlString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", " ").Replace(s) + `"`
}
