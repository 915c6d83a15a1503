module github.com/streamguard/streamguard

go 1.26.0

require (
	github.com/dlclark/regexp2 v1.12.0
	github.com/sashabaranov/go-openai v1.43.0
	github.com/x448/float16 v0.8.4
	golang.org/x/sys v0.50.0
	golang.org/x/text v0.44.0
)

require github.com/ebitengine/purego v0.11.3
