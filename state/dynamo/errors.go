package dynamo

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

var (
	// ErrConditionFailed is returned by a conditional write whose
	// condition did not hold.
	ErrConditionFailed = errors.New("dynamo: condition failed")
	// ErrUnprocessed is returned when a batch call still had unprocessed
	// items after its retries.
	ErrUnprocessed = errors.New("dynamo: unprocessed items after retries")
	// ErrNoTable is returned when the table does not exist.
	ErrNoTable = errors.New("dynamo: table does not exist")
)

// ConditionError is a failed condition; Current is the item as stored when
// the server returned it (DynamoDB does with ALL_OLD; dynalite does not),
// else nil.
type ConditionError struct {
	Key     Key
	Current *Item
}

func (e *ConditionError) Error() string { return "dynamo: condition failed on " + e.Key.String() }

// Unwrap makes errors.Is(err, ErrConditionFailed) hold.
func (e *ConditionError) Unwrap() error { return ErrConditionFailed }

// Reason classifies an error for metrics and retry decisions:
// "conditional", "throttled" (the table's or account's capacity),
// "unavailable" (network, timeouts, 5xx: worth retrying), "canceled" (the
// caller's context), or "other" (a request DynamoDB refuses: retrying does
// not help).
func Reason(err error) string {
	var te *retry.MaxAttemptsError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrConditionFailed):
		return "conditional"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrUnprocessed):
		return "throttled"
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return "conditional"
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch code := ae.ErrorCode(); code {
		case "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
			"LimitExceededException", "TooManyRequestsException":
			return "throttled"
		case "InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
			"RequestTimeout", "RequestTimeoutException":
			return "unavailable"
		}
		if ae.ErrorFault() == smithy.FaultServer {
			return "unavailable"
		}
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
			return "unavailable"
		}
		return "other"
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded) {
		return "unavailable"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "unavailable"
	}
	// Transport failures the SDK wraps without a net.Error (a connection
	// reset mid-response, an EOF).
	msg := err.Error()
	for _, s := range []string{"connection refused", "connection reset", "EOF", "broken pipe", "i/o timeout", "no such host"} {
		if strings.Contains(msg, s) {
			return "unavailable"
		}
	}
	return "other"
}

// Retryable reports whether retrying err later may succeed: throttling and
// unavailability. Conditions, refused requests and cancellation are not.
func Retryable(err error) bool {
	switch Reason(err) {
	case "throttled", "unavailable":
		return true
	}
	return false
}
