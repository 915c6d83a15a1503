package checkpoint

import (
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// diagnose recognises folders that are not guard models for a known reason
// and says so in one message, and runs the lm_head heuristic.
func (r *LoadReport) diagnose(set *safetensors.Set, cfg *config.Config) {
	var present, absent []string
	for _, n := range HeadNames {
		// A head stored quantized is still there; its row explains the layout.
		if set.Has(n) || set.Has(strings.TrimSuffix(n, ".weight")+".qweight") {
			present = append(present, n)
		} else {
			absent = append(absent, n)
		}
	}
	_, hasLMHead, _ := set.Info("lm_head.weight")
	arch := strings.Join(printableAll(cfg.Architectures), ", ")
	if arch == "" {
		arch = "no architecture"
	}
	headList := strings.Join(HeadNames, ", ")
	switch {
	case !r.Guard && len(present) == 0 && cfg.IsAWQ() && hasLMHead != "":
		r.Diagnosis = fmt.Sprintf("broken INT4 export: config.json declares %s, the backbone is AWQ-quantized, the folder has an lm_head.weight, "+
			"and none of the 8 guard head tensors exist (missing: %s). This bundle cannot do stream safety classification: "+
			"the export loaded the guard as a causal LM, which dropped the classifier heads and saved a newly initialised lm_head. "+
			"Restore the heads from the original model with `streamguard graft`.", arch, headList)
	case !r.Guard && len(present) == 0:
		r.Diagnosis = fmt.Sprintf("config.json declares %s and the folder has none of the 8 guard head tensors (missing: %s): "+
			"it is a plain Qwen3 checkpoint and cannot do stream safety classification.", arch, headList)
		if !cfg.TieWordEmbeddings && hasLMHead == "" && strings.Contains(arch, "CausalLM") {
			r.Diagnosis += " It is not a usable causal LM either: tie_word_embeddings is false but there is no lm_head.weight, so a loader would initialise the output layer randomly."
		}
	case !r.Guard && len(absent) == 0:
		r.Diagnosis = fmt.Sprintf("the folder holds all 8 guard head tensors, but config.json declares %s, so a loader of that class would silently drop them. "+
			"Set architectures to [%q] and add guard_inner_size and the four label maps.", arch, config.GuardArchitecture)
	case r.Guard && len(present) == 0:
		r.Diagnosis = fmt.Sprintf("config.json declares %s, but none of the 8 guard head tensors exist (missing: %s): "+
			"the weights are those of a plain Qwen3 model or of an export that dropped the heads, and cannot do stream safety classification.",
			config.GuardArchitecture, headList)
	}
	if hasLMHead != "" {
		r.lmHeadHeuristic(set, cfg)
	}
}
