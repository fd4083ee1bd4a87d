// Package deposits is the wallet deposit service rebuilt on Herald: the
// seed system that took Kafka, Goka and three programs is here one small
// HTTP service over a Herald server.
//
//   - POST /deposit {"wallet_id", "amount"} publishes a protobuf Deposit to
//     the topic "deposits", keyed by the wallet.
//   - GET /check/{wallet_id} answers {"wallet_id", "balance",
//     "above_threshold"} from two views: "balance" (the sum of a wallet's
//     deposits) and "flagged" (fed by the rule "flagger", which flags a
//     wallet whose deposits within any two minutes add up to more than
//     10,000).
//   - Flag and Unflag set or clear a wallet's flag by hand (the seed's
//     flag-wallet tool).
//
// The service keeps no state: Herald holds the deposits, the rule's
// windows and the views, so it can restart, or Herald can be killed, at
// any moment. Setup applies the schema, the rule and the views (the files
// beside this one), and is safe to run at every start.
package deposits

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/heraldhq/herald/client"
)

// The Herald configuration of the service.
var (
	//go:embed deposit.proto
	depositProto string
	//go:embed flagger.json
	flaggerRule []byte
	//go:embed balance.json
	balanceView []byte
	//go:embed flagged.json
	flaggedView []byte
)

// Names in Herald.
const (
	Topic       = "deposits"
	FlagTopic   = "wallets.flagged"
	RuleFlagger = "flagger"
	ViewBalance = "balance"
	ViewFlagged = "flagged"
	message     = "deposits.v1.Deposit"
	maxBody     = 4 << 10
)

// Setup registers the deposit schema, the flagger rule and the two views
// on the Herald server c talks to (with an admin key). Each call is a PUT
// of the same definition, so running it again changes nothing.
func Setup(ctx context.Context, c *client.Client) error {
	schema, _ := json.Marshal(map[string]string{"type": "protobuf", "message": message, "proto": depositProto})
	if _, err := c.PutSchema(ctx, Topic, schema); err != nil {
		return fmt.Errorf("schema of %s: %w", Topic, err)
	}
	if _, err := c.PutRule(ctx, RuleFlagger, flaggerRule); err != nil {
		return fmt.Errorf("rule %s: %w", RuleFlagger, err)
	}
	for name, def := range map[string][]byte{ViewBalance: balanceView, ViewFlagged: flaggedView} {
		if _, err := c.PutView(ctx, name, def); err != nil {
			return fmt.Errorf("view %s: %w", name, err)
		}
	}
	return nil
}

// Service is the deposit service's HTTP API.
type Service struct {
	Herald *client.Client
	// Now stamps deposits (their ts, which the flagger's window follows);
	// nil means time.Now. Tests set a clock of their own.
	Now func() time.Time
}

// Handler serves POST /deposit and GET /check/{wallet_id}.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /deposit", s.deposit)
	mux.HandleFunc("GET /check/{wallet_id}", s.check)
	return mux
}

// DepositRequest is the body of POST /deposit. Amount may be a number or
// a string holding one, as the seed's clients send it.
type DepositRequest struct {
	WalletID string          `json:"wallet_id"`
	Amount   json.RawMessage `json:"amount"`
}

// DepositResponse is the answer to a deposit: the event Herald stored.
type DepositResponse struct {
	ID  string `json:"id"`
	Seq int64  `json:"seq"`
}

// Check is the answer of GET /check/{wallet_id}.
type Check struct {
	WalletID       string  `json:"wallet_id"`
	Balance        float64 `json:"balance"`
	AboveThreshold bool    `json:"above_threshold"`
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, field, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"title": http.StatusText(status), "status": status, "detail": detail, "field": field})
}

func parseAmount(raw json.RawMessage) (float64, error) {
	s := strings.TrimSpace(string(raw))
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("amount must be a positive number, got %s", raw)
	}
	return f, nil
}

// Encode writes a Deposit in the protobuf binary encoding of
// deposit.proto.
func Encode(wallet string, amount float64, ts int64) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, wallet)
	b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(amount))
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(ts))
	return b
}

func (s *Service) deposit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeProblem(w, http.StatusRequestEntityTooLarge, "", "the body is larger than 4 KiB")
		return
	}
	var req DepositRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, "", "the body must be {\"wallet_id\", \"amount\"}: "+err.Error())
		return
	}
	if req.WalletID == "" || len(req.WalletID) > 200 {
		writeProblem(w, http.StatusBadRequest, "wallet_id", "wallet_id is required (at most 200 bytes)")
		return
	}
	amount, err := parseAmount(req.Amount)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "amount", err.Error())
		return
	}
	res, err := s.Herald.Publish(r.Context(), Topic, Encode(req.WalletID, amount, s.now().Unix()),
		client.PublishOptions{Key: req.WalletID, ContentType: "application/protobuf", Type: "deposit"})
	if err != nil {
		writeProblem(w, http.StatusBadGateway, "", "herald: "+err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, DepositResponse{ID: res.ID, Seq: res.Seq})
}

// row reads a view's row; ok is false when the key has none. minSeq > 0
// waits until the view reflects its input up to it.
func (s *Service) row(ctx context.Context, view, key string, minSeq int64) (json.RawMessage, bool, error) {
	raw, err := s.Herald.GetViewRow(ctx, view, key, minSeq)
	if p, isProblem := errors.AsType[*client.Problem](err); isProblem && p.Status == http.StatusNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var row struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &row); err != nil {
		return nil, false, err
	}
	return row.Value, true, nil
}

// check answers from the views; ?min_seq=N (the seq a deposit answered)
// reads the balance with that deposit in it.
func (s *Service) check(w http.ResponseWriter, r *http.Request) {
	wallet := r.PathValue("wallet_id")
	var minSeq int64
	if v := r.URL.Query().Get("min_seq"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeProblem(w, http.StatusBadRequest, "min_seq", "min_seq must be a seq a deposit answered")
			return
		}
		minSeq = n
	}
	out := Check{WalletID: wallet}
	bal, ok, err := s.row(r.Context(), ViewBalance, wallet, minSeq)
	if err != nil {
		writeProblem(w, http.StatusBadGateway, "", "herald: "+err.Error())
		return
	}
	if ok {
		_ = json.Unmarshal(bal, &out.Balance)
	}
	flag, ok, err := s.row(r.Context(), ViewFlagged, wallet, 0)
	if err != nil {
		writeProblem(w, http.StatusBadGateway, "", "herald: "+err.Error())
		return
	}
	// A row is the flagger's event, or what an operator set: anything but
	// false and null flags the wallet.
	out.AboveThreshold = ok && string(flag) != "false" && string(flag) != "null"
	writeJSON(w, http.StatusOK, out)
}

// Flag sets the wallet's flag by hand; Herald records it as an event of
// the flagged view's input, so it replays. It returns the event's seq.
func Flag(ctx context.Context, c *client.Client, wallet string) (int64, error) {
	raw, err := c.SetViewRow(ctx, ViewFlagged, wallet, json.RawMessage(`true`))
	return seqOf(raw, err)
}

// Unflag clears the wallet's flag by hand (until the flagger raises it
// again). It returns the event's seq.
func Unflag(ctx context.Context, c *client.Client, wallet string) (int64, error) {
	raw, err := c.DeleteViewRow(ctx, ViewFlagged, wallet)
	return seqOf(raw, err)
}

func seqOf(raw json.RawMessage, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	var out struct {
		Seq int64 `json:"seq"`
	}
	return out.Seq, json.Unmarshal(raw, &out)
}
