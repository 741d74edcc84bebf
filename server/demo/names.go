package demo

// Common surnames in the rural southwest, most frequent first (the list is
// drawn from with a bias towards its head).
var surnames = []string{
	"李", "王", "张", "杨", "刘", "陈", "赵", "马", "周", "吴",
	"罗", "何", "段", "普", "者", "孙", "朱", "胡", "郭", "林",
	"高", "黄", "蒋", "沈", "钱", "鲁", "施", "叶", "苏", "余",
}

// Given names by generation: the old, the middle-aged and the young have
// noticeably different names in the registers.
var (
	maleOld      = []string{"正华", "国富", "德明", "发财", "永福", "光荣", "文清", "世昌", "绍兴", "家顺", "有才", "金贵", "志高", "天福", "玉堂"}
	femaleOld    = []string{"秀英", "桂英", "玉兰", "凤英", "翠花", "桂芬", "素珍", "玉珍", "美兰", "春兰", "金凤", "秀珍"}
	maleMiddle   = []string{"建国", "志强", "国华", "建平", "文明", "光明", "卫东", "海涛", "勇", "伟", "军", "刚", "建华", "永刚", "春林", "学文"}
	femaleMiddle = []string{"丽华", "春梅", "小芳", "红梅", "丽萍", "燕", "敏", "海燕", "艳芬", "丽", "慧", "英", "晓红", "琼芬"}
	maleYoung    = []string{"浩然", "宇航", "子轩", "俊杰", "泽宇", "一鸣", "明辉", "浩宇", "嘉豪", "梓睿", "思远", "博文", "天佑"}
	femaleYoung  = []string{"欣怡", "子涵", "雨桐", "诗琪", "梦瑶", "思雨", "佳怡", "语嫣", "可欣", "雅婷", "婉清", "若曦"}
)
