// Renders an Ollama-style chat TEMPLATE with Go's text/template, the engine Ollama uses.
// Input (stdin, JSON): {"template": "...", "messages": [{"role": "...", "content": "..."}]}.
// The values offered are Ollama's: .Messages (Role, Content) and .System.
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Input struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	system := ""
	for _, m := range in.Messages {
		if m.Role == "system" {
			system = m.Content
		}
	}
	t := template.Must(template.New("m").Parse(in.Template))
	values := map[string]any{"Messages": in.Messages, "System": system}
	if err := t.Execute(os.Stdout, values); err != nil {
		panic(err)
	}
}
