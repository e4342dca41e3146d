package agent

import (
	"bytes"
	"errors"
	"fmt"
	"mime"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// The apiserver's protobuf encoding: a 4-byte magic number, then a
// runtime.Unknown whose Raw is the object's generated protobuf. The
// kubelet talks to the apiserver this way; decoding and encoding it costs
// the apiserver less than JSON on the hottest path (a thousand Lease
// renewals every ten seconds), and needs no scheme here: k8s.io/api types
// carry generated Marshal and Unmarshal methods.
const contentProtobuf = "application/vnd.kubernetes.protobuf"

const protobufMagic = "k8s\x00"

// protoObject is a k8s.io/api type with its generated protobuf methods.
type protoObject interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// encodeProtobuf wraps obj, of apiVersion and kind, in the envelope.
func encodeProtobuf(obj protoObject, apiVersion, kind string) ([]byte, error) {
	raw, err := obj.Marshal()
	if err != nil {
		return nil, err
	}
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: apiVersion, Kind: kind}, Raw: raw}
	env, err := u.Marshal()
	if err != nil {
		return nil, err
	}
	return append([]byte(protobufMagic), env...), nil
}

// decodeProtobuf unwraps data into out.
func decodeProtobuf(data []byte, out protoObject) error {
	if !bytes.HasPrefix(data, []byte(protobufMagic)) {
		return errors.New("not a Kubernetes protobuf message")
	}
	var u runtime.Unknown
	if err := u.Unmarshal(data[len(protobufMagic):]); err != nil {
		return err
	}
	return out.Unmarshal(u.Raw)
}

// isProtobuf reports whether a Content-Type names the protobuf encoding.
func isProtobuf(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == contentProtobuf
}

// decodeStatus reads the metav1.Status of an error answer in either
// encoding.
func decodeStatus(contentType string, data []byte) (metav1.Status, bool) {
	var st metav1.Status
	if isProtobuf(contentType) {
		if decodeProtobuf(data, &st) != nil {
			return st, false
		}
		return st, true
	}
	if err := jsonUnmarshal(data, &st); err != nil || st.Kind != "Status" {
		return st, false
	}
	return st, true
}

// protoBody is a request body to send as protobuf.
type protoBody struct {
	obj        protoObject
	apiVersion string
	kind       string
}

func (p protoBody) encode() ([]byte, error) {
	b, err := encodeProtobuf(p.obj, p.apiVersion, p.kind)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", p.kind, err)
	}
	return b, nil
}
