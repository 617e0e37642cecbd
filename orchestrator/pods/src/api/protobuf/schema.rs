//! The field tables of the protobuf decoder: each message herd decodes,
//! by field number, as `k8s.io/api/{core,apps}/v1/generated.proto` and
//! apimachinery's `meta/v1` define it, with the JSON name it becomes.

#[derive(Debug, Clone, Copy)]
pub(super) enum Ty {
    Str,
    /// A plain integer: zero is Go's omitted zero value.
    Int,
    /// A pointer integer (`*int32`): zero was set, and is kept.
    OptInt,
    /// A plain bool: false is omitted.
    Bool,
    /// A pointer bool (`*bool`): false was set, and is kept.
    OptBool,
    /// `metav1.Time`: seconds and nanos, as RFC 3339.
    Time,
    /// `map<string, string>`.
    StrMap,
    /// `map<string, resource.Quantity>`: quantities as their strings.
    QuantityMap,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrStr,
    Msg(&'static [Field]),
    /// A message whose fields JSON shows in the parent (Go's embedded
    /// structs: a Volume's source, a Probe's handler).
    Inline(&'static [Field]),
    /// A field herd decodes no further: refused unless empty.
    Unsupported,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Field {
    pub(super) tag: u64,
    pub(super) name: &'static str,
    pub(super) ty: Ty,
    pub(super) repeated: bool,
}

pub(super) const fn f(tag: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: false,
    }
}

const fn list(tag: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    f(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::StrMap),
    f(12, "annotations", Ty::StrMap),
    list(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    list(14, "finalizers", Ty::Str),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[list(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];

/// An entry of a `map<string, string>`.
pub(super) const STR_ENTRY: &[Field] = &[f(1, "key", Ty::Str), f(2, "value", Ty::Str)];

/// An entry of a `map<string, resource.Quantity>`.
pub(super) const QUANTITY_ENTRY: &[Field] = &[
    f(1, "key", Ty::Str),
    f(2, "value", Ty::Msg(&[f(1, "string", Ty::Str)])),
];

pub(super) const TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];

const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Ty::StrMap),
    list(
        2,
        "matchExpressions",
        Ty::Msg(&[
            f(1, "key", Ty::Str),
            f(2, "operator", Ty::Str),
            list(3, "values", Ty::Str),
        ]),
    ),
];

const CONTAINER_PORT: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "hostPort", Ty::Int),
    f(3, "containerPort", Ty::Int),
    f(4, "protocol", Ty::Str),
    f(5, "hostIP", Ty::Str),
];

const ENV_VAR: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "value", Ty::Str),
    f(3, "valueFrom", Ty::Unsupported),
];

const RESOURCES: &[Field] = &[
    f(1, "limits", Ty::QuantityMap),
    f(2, "requests", Ty::QuantityMap),
    list(3, "claims", Ty::Unsupported),
];

const VOLUME_MOUNT: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "readOnly", Ty::Bool),
    f(3, "mountPath", Ty::Str),
    f(4, "subPath", Ty::Str),
    f(5, "mountPropagation", Ty::Str),
    f(6, "subPathExpr", Ty::Str),
    f(7, "recursiveReadOnly", Ty::Str),
    list(8, "bindMountOptions", Ty::Str),
];

const PROBE: &[Field] = &[
    f(
        1,
        "handler",
        Ty::Inline(&[
            f(1, "exec", Ty::Msg(&[list(1, "command", Ty::Str)])),
            f(
                2,
                "httpGet",
                Ty::Msg(&[
                    f(1, "path", Ty::Str),
                    f(2, "port", Ty::IntOrStr),
                    f(3, "host", Ty::Str),
                    f(4, "scheme", Ty::Str),
                    list(
                        5,
                        "httpHeaders",
                        Ty::Msg(&[f(1, "name", Ty::Str), f(2, "value", Ty::Str)]),
                    ),
                ]),
            ),
            f(
                3,
                "tcpSocket",
                Ty::Msg(&[f(1, "port", Ty::IntOrStr), f(2, "host", Ty::Str)]),
            ),
            f(4, "grpc", Ty::Unsupported),
        ]),
    ),
    f(2, "initialDelaySeconds", Ty::Int),
    f(3, "timeoutSeconds", Ty::Int),
    f(4, "periodSeconds", Ty::Int),
    f(5, "successThreshold", Ty::Int),
    f(6, "failureThreshold", Ty::Int),
    f(7, "terminationGracePeriodSeconds", Ty::OptInt),
];

const CONTAINER: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "image", Ty::Str),
    list(3, "command", Ty::Str),
    list(4, "args", Ty::Str),
    f(5, "workingDir", Ty::Str),
    list(6, "ports", Ty::Msg(CONTAINER_PORT)),
    list(7, "env", Ty::Msg(ENV_VAR)),
    f(8, "resources", Ty::Msg(RESOURCES)),
    list(9, "volumeMounts", Ty::Msg(VOLUME_MOUNT)),
    f(10, "livenessProbe", Ty::Msg(PROBE)),
    f(11, "readinessProbe", Ty::Msg(PROBE)),
    f(12, "lifecycle", Ty::Unsupported),
    f(13, "terminationMessagePath", Ty::Str),
    f(14, "imagePullPolicy", Ty::Str),
    f(15, "securityContext", Ty::Unsupported),
    f(16, "stdin", Ty::Bool),
    f(17, "stdinOnce", Ty::Bool),
    f(18, "tty", Ty::Bool),
    list(19, "envFrom", Ty::Unsupported),
    f(20, "terminationMessagePolicy", Ty::Str),
    list(21, "volumeDevices", Ty::Unsupported),
    f(22, "startupProbe", Ty::Msg(PROBE)),
    list(23, "resizePolicy", Ty::Unsupported),
    f(24, "restartPolicy", Ty::Str),
    list(25, "restartPolicyRules", Ty::Unsupported),
];

const VOLUME: &[Field] = &[
    f(1, "name", Ty::Str),
    f(
        2,
        "volumeSource",
        Ty::Inline(&[
            f(
                1,
                "hostPath",
                Ty::Msg(&[f(1, "path", Ty::Str), f(2, "type", Ty::Str)]),
            ),
            f(
                2,
                "emptyDir",
                Ty::Msg(&[f(1, "medium", Ty::Str), f(2, "sizeLimit", Ty::Unsupported)]),
            ),
        ]),
    ),
];

pub(super) const POD_SPEC: &[Field] = &[
    list(1, "volumes", Ty::Msg(VOLUME)),
    list(2, "containers", Ty::Msg(CONTAINER)),
    f(3, "restartPolicy", Ty::Str),
    f(4, "terminationGracePeriodSeconds", Ty::OptInt),
    f(5, "activeDeadlineSeconds", Ty::OptInt),
    f(6, "dnsPolicy", Ty::Str),
    f(7, "nodeSelector", Ty::StrMap),
    f(8, "serviceAccountName", Ty::Str),
    f(9, "serviceAccount", Ty::Str),
    f(10, "nodeName", Ty::Str),
    f(11, "hostNetwork", Ty::Bool),
    f(12, "hostPID", Ty::Bool),
    f(13, "hostIPC", Ty::Bool),
    f(14, "securityContext", Ty::Unsupported),
    list(15, "imagePullSecrets", Ty::Unsupported),
    f(16, "hostname", Ty::Str),
    f(17, "subdomain", Ty::Str),
    f(18, "affinity", Ty::Unsupported),
    f(19, "schedulerName", Ty::Str),
    list(20, "initContainers", Ty::Msg(CONTAINER)),
    f(21, "automountServiceAccountToken", Ty::OptBool),
    list(22, "tolerations", Ty::Unsupported),
    list(23, "hostAliases", Ty::Unsupported),
    f(24, "priorityClassName", Ty::Str),
    f(25, "priority", Ty::OptInt),
    f(26, "dnsConfig", Ty::Unsupported),
    f(27, "shareProcessNamespace", Ty::OptBool),
    list(28, "readinessGates", Ty::Unsupported),
    f(29, "runtimeClassName", Ty::Str),
    f(30, "enableServiceLinks", Ty::OptBool),
    f(31, "preemptionPolicy", Ty::Str),
    f(32, "overhead", Ty::QuantityMap),
    list(33, "topologySpreadConstraints", Ty::Unsupported),
    list(34, "ephemeralContainers", Ty::Unsupported),
    f(35, "setHostnameAsFQDN", Ty::OptBool),
    f(36, "os", Ty::Unsupported),
    f(37, "hostUsers", Ty::OptBool),
    list(38, "schedulingGates", Ty::Unsupported),
    list(39, "resourceClaims", Ty::Unsupported),
    f(40, "resources", Ty::Msg(RESOURCES)),
];

const POD_TEMPLATE_SPEC: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(POD_SPEC)),
];

const CONDITION: &[Field] = &[
    f(1, "type", Ty::Str),
    f(2, "status", Ty::Str),
    f(4, "reason", Ty::Str),
    f(5, "message", Ty::Str),
    f(6, "lastUpdateTime", Ty::Time),
    f(7, "lastTransitionTime", Ty::Time),
];

const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "replicas", Ty::OptInt),
            f(2, "selector", Ty::Msg(LABEL_SELECTOR)),
            f(3, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
            f(
                4,
                "strategy",
                Ty::Msg(&[
                    f(1, "type", Ty::Str),
                    f(
                        2,
                        "rollingUpdate",
                        Ty::Msg(&[
                            f(1, "maxUnavailable", Ty::IntOrStr),
                            f(2, "maxSurge", Ty::IntOrStr),
                        ]),
                    ),
                ]),
            ),
            f(5, "minReadySeconds", Ty::Int),
            f(6, "revisionHistoryLimit", Ty::OptInt),
            f(7, "paused", Ty::Bool),
            f(9, "progressDeadlineSeconds", Ty::OptInt),
        ]),
    ),
    f(
        3,
        "status",
        Ty::Msg(&[
            f(1, "observedGeneration", Ty::Int),
            f(2, "replicas", Ty::Int),
            f(3, "updatedReplicas", Ty::Int),
            f(4, "availableReplicas", Ty::Int),
            f(5, "unavailableReplicas", Ty::Int),
            list(6, "conditions", Ty::Msg(CONDITION)),
            f(7, "readyReplicas", Ty::Int),
            f(8, "collisionCount", Ty::OptInt),
            f(9, "terminatingReplicas", Ty::OptInt),
        ]),
    ),
];

const SERVICE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Ty::Msg(&[
            list(
                1,
                "ports",
                Ty::Msg(&[
                    f(1, "name", Ty::Str),
                    f(2, "protocol", Ty::Str),
                    f(3, "port", Ty::Int),
                    f(4, "targetPort", Ty::IntOrStr),
                    f(5, "nodePort", Ty::Int),
                    f(6, "appProtocol", Ty::Str),
                ]),
            ),
            f(2, "selector", Ty::StrMap),
            f(3, "clusterIP", Ty::Str),
            f(4, "type", Ty::Str),
            list(5, "externalIPs", Ty::Str),
            f(7, "sessionAffinity", Ty::Str),
            f(8, "loadBalancerIP", Ty::Str),
            list(9, "loadBalancerSourceRanges", Ty::Str),
            f(10, "externalName", Ty::Str),
            f(11, "externalTrafficPolicy", Ty::Str),
            f(12, "healthCheckNodePort", Ty::Int),
            f(13, "publishNotReadyAddresses", Ty::Bool),
            f(14, "sessionAffinityConfig", Ty::Unsupported),
            f(17, "ipFamilyPolicy", Ty::Str),
            list(18, "clusterIPs", Ty::Str),
            list(19, "ipFamilies", Ty::Str),
            f(20, "allocateLoadBalancerNodePorts", Ty::OptBool),
            f(21, "loadBalancerClass", Ty::Str),
            f(22, "internalTrafficPolicy", Ty::Str),
            f(23, "trafficDistribution", Ty::Str),
        ]),
    ),
    f(
        3,
        "status",
        Ty::Msg(&[
            f(
                1,
                "loadBalancer",
                Ty::Msg(&[list(1, "ingress", Ty::Unsupported)]),
            ),
            list(2, "conditions", Ty::Unsupported),
        ]),
    ),
];

/// The kinds whose protobuf form herd decodes, by apiVersion and kind.
pub(super) fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "Service") => Some(SERVICE),
        ("apps/v1", "Deployment") => Some(DEPLOYMENT),
        _ => None,
    }
}
