// embed: an offline stand-in for a text-embeddings inference server, speaking the
// HTTP API an EmbeddingServer's clients use (GET /health, GET /info, POST /embed)
// with the same command line (--model-id, --port; other flags are accepted and
// ignored). It loads no model: a text's vector is built from hashes of its words,
// so equal texts get equal vectors and texts sharing words point the same way.
package main

import (
	"encoding/json"
	"hash/fnv"
	"log"
	"math"
	"net/http"
	"os"
	"strings"
	"time"
)

const dimensions = 384

func main() {
	model, port := os.Getenv("MODEL_ID"), "80"
	for i := 1; i+1 < len(os.Args); i++ {
		switch os.Args[i] {
		case "--model-id":
			model = os.Args[i+1]
		case "--port":
			port = os.Args[i+1]
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"model_id": model, "model_dtype": "float32", "max_input_length": 512, "max_client_batch_size": 32,
			"model_type": map[string]any{"embedding": map[string]any{"pooling": "mean"}},
			"version": "offline-stand-in",
		})
	})
	mux.HandleFunc("POST /embed", func(w http.ResponseWriter, r *http.Request) {
		var request struct {
			Inputs    json.RawMessage `json:"inputs"`
			Normalize *bool           `json:"normalize"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&request); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error(), "error_type": "Validation"})
			return
		}
		var texts []string
		var one string
		if json.Unmarshal(request.Inputs, &one) == nil {
			texts = []string{one}
		} else if err := json.Unmarshal(request.Inputs, &texts); err != nil || len(texts) == 0 {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": "inputs must be a string or a non-empty list of strings", "error_type": "Validation"})
			return
		}
		normalize := request.Normalize == nil || *request.Normalize
		vectors := make([][]float32, len(texts))
		for i, text := range texts {
			vectors[i] = embed(text, normalize)
		}
		writeJSON(w, http.StatusOK, vectors)
	})
	log.Printf("embed (offline stand-in) serving model %q on :%s", model, port)
	server := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.ListenAndServe())
}

func embed(text string, normalize bool) []float32 {
	vector := make([]float32, dimensions)
	for _, word := range strings.Fields(strings.ToLower(text)) {
		h := fnv.New64a()
		h.Write([]byte(word))
		sum := h.Sum64()
		sign := float32(1)
		if sum&1 == 1 {
			sign = -1
		}
		vector[(sum>>1)%dimensions] += sign
	}
	if normalize {
		var norm float64
		for _, v := range vector {
			norm += float64(v * v)
		}
		if norm > 0 {
			for i := range vector {
				vector[i] = float32(float64(vector[i]) / math.Sqrt(norm))
			}
		}
	}
	return vector
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
